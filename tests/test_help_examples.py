"""Every `--help` example: it parses with the real parser (fast), and every path it reads exists after a
`compress` run or is written by another example (the slow half lives in tests/pipeline/test_compress_e2e.py,
on the quick run it already makes)."""
import argparse
import shlex

from edgeprune.cli import build_parser

# Namespace attributes that name something a command writes (or a cache it fills), not an input.
OUTPUTS = ("out", "dst", "plot", "runs_dir", "data_root", "cache_dir")
NOT_PATHS = ("synthetic",)
PLACEHOLDER = "path/to/"      # a user's own dataset, spelled so that nobody takes it for a real path
RUN = "runs/default/"         # what `edgeprune compress` (default preset) writes


def _parsers(parser, seen=None):
    seen = seen if seen is not None else set()
    if id(parser) in seen:
        return
    seen.add(id(parser))
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub, seen)


def examples():
    """(command line as written, tokens after `edgeprune`) of every example in every epilog."""
    out = []
    for p in _parsers(build_parser()):
        for line in (p.epilog or "").splitlines():
            text = line.strip()
            for prefix in ("examples:", "example:"):
                text = text[len(prefix):].strip() if text.startswith(prefix) else text
            if not text.startswith("edgeprune "):
                continue
            for stop in ("  #", " (", " >", " |"):     # trailing comments, notes and shell redirections
                text = text.split(stop, 1)[0]
            out.append((line.strip(), shlex.split(text)[1:]))
    return out


def inputs_and_outputs(tokens):
    """Parse an example with the real parser; the path-like values it reads and those it writes."""
    args = build_parser().parse_args(tokens)
    reads, writes = [], []
    for key, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if not isinstance(v, str) or v not in tokens or v in NOT_PATHS or "/" not in v:
                continue
            (writes if key in OUTPUTS else reads).append(v)
    if tokens[:2] == ["calib", "build"]:
        writes.append(args.bundle.rstrip("/") + "/calib")      # calib build writes into the bundle
    return reads, writes


def missing_paths(root):
    """Example paths that neither exist under `root` (where runs/default/ is the run) nor lie under what
    another example writes: [(example, path)]."""
    parsed = [(line, *inputs_and_outputs(tokens)) for line, tokens in examples()]
    written = [w.rstrip("/") for _, _, ws in parsed for w in ws]
    bad = []
    for line, reads, _ in parsed:
        for path in reads:
            if path.startswith(PLACEHOLDER):
                continue
            if any(path.rstrip("/") == w or path.startswith(w + "/") for w in written):
                continue
            if not (root / path).exists():
                bad.append((line, path))
    return bad


def test_every_example_parses_and_names_run_paths():
    found = examples()
    assert len(found) >= 20                                    # every command has at least one
    for line, tokens in found:
        reads, _ = inputs_and_outputs(tokens)                  # SystemExit here = an example that does not parse
        for path in reads:
            assert path.startswith((RUN, PLACEHOLDER)) or any(  # noqa: E127
                path.startswith(w) for _, t in found for w in inputs_and_outputs(t)[1]), (line, path)
