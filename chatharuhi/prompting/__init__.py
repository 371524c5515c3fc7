"""Prompting: token counters, templates, the packer and its story units, story reuse, lorebooks, persona, cleanup."""
