"""The ``boneage`` console command: one entry point for every pipeline, ``boneage SUBCOMMAND [options]``.

Each subcommand runs the same ``main(argv)`` as ``python -m pipelines.<module>``, so both forms take the same
options and exit with the same status; ``boneage SUBCOMMAND --help`` says what it reads and writes.
"""
from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

# subcommand -> module under pipelines/ (benchmarks and experiments stay `python -m pipelines.benchmarks.X`)
COMMANDS: dict[str, str] = {
    "predict": "predict",
    "followup": "followup",
    "serve": "serve",
    "dicom-node": "dicom_node",
    "calibrate-site": "calibrate_site",
    "prepare": "prepare",
    "train": "train",
    "evaluate": "evaluate",
    "choose-model": "choose_model",
    "choose-ensemble": "choose_ensemble",
    "precompute": "precompute",
    "precision": "precision",
    "context": "context",
    "mask-quality": "mask_quality",
    "explanation-audit": "explanation_audit",
    "model-card": "model_card",
    "fit-polarity": "fit_polarity",
    "fit-laterality": "fit_laterality",
}


def summary(module: str) -> str:
    """The first sentence of a pipeline's docstring, read from its source (importing it would load torch)."""
    source = (Path(__file__).with_name(f"{module}.py")).read_text(encoding="utf-8")
    paragraph = " ".join((ast.get_docstring(ast.parse(source)) or "").strip().split("\n\n")[0].split())
    first = paragraph.split(". ")[0]
    return first if first.endswith((".", "?", "!")) else first + "."


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: boneage SUBCOMMAND [options]   (boneage SUBCOMMAND --help for its options)", "",
             "Pediatric bone-age assessment from left-hand radiographs.", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {summary(module)}" for name, module in COMMANDS.items()]
    lines += ["", "Folders: $BONEAGE_DATA, $BONEAGE_ARTIFACTS, $BONEAGE_MODEL (boneage.settings); the subcommands that",
              "read one also take --data-dir, --artifacts-dir or --model-dir (see their --help)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to its subcommand's ``main``; 2 for an unknown one."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(usage(), file=sys.stderr)
        return 2
    if args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if args[0] == "help":  # "boneage help predict" is "boneage predict --help"
        args = [args[1], "--help"] if len(args) > 1 else ["--help"]
        if args == ["--help"]:
            print(usage())
            return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"boneage: unknown subcommand {name!r}; one of {', '.join(COMMANDS)} (boneage --help)",
              file=sys.stderr)
        return 2
    module = importlib.import_module(f"pipelines.{COMMANDS[name]}")
    prog = sys.argv[0]
    sys.argv[0] = f"boneage {name}"  # argparse names the program after argv[0]: "usage: boneage predict ..."
    try:
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback, for every subcommand (128 + SIGINT)
        print(f"\nboneage {name}: interrupted (Ctrl-C).", file=sys.stderr)
        return 130
    except SystemExit as exc:  # argparse's --help and usage errors, or a command's own exit message
        if isinstance(exc.code, int) or exc.code is None:
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 2
    finally:
        sys.argv[0] = prog


if __name__ == "__main__":
    raise SystemExit(main())
