"""A character is a folder: its files and manifest, its scenes and windows, where folders are found, checks."""

from .folder import Character, Manifest, load_character

__all__ = ["Character", "Manifest", "load_character"]
