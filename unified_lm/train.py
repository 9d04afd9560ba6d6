"""Train with one recipe: ``python -m unified_lm.train [RECIPE] --config X.yaml [key=value ...]``.

    python -m unified_lm.train --config experiments/asr_sld.yaml           # RECIPE defaults to lm
    python -m unified_lm.train ctc --config experiments/prefix_ctc.yaml
    accelerate launch -m unified_lm.train --config experiments/asr_sld.yaml
    torchrun --nproc_per_node 2 -m unified_lm.train --config ...            # CPU too (gloo)

``unified-lm train RECIPE ...`` is the same command. Rerunning it resumes the run in
``out_dir`` where it stopped.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .config import describe, load_config
from .errors import UnifiedLMError
from .logs import setup_logging
from .recipes import NAMES, get_recipe, recipe_for
from .training import fit


def train(cfg: Any) -> dict[str, Any]:
    """Trains (or resumes) with the recipe of ``cfg``'s class; returns the run's summary."""
    return fit(recipe_for(cfg), cfg)


def build_parser(prog: str, recipe: str) -> argparse.ArgumentParser:
    """The parser of one recipe's command; its ``--help`` lists the recipe's config keys."""
    chosen = get_recipe(recipe)
    parser = argparse.ArgumentParser(
        prog=prog, usage=f"{prog} [{{{','.join(NAMES)}}}] --config CONFIG [key=value ...]",
        description=f"Train with a recipe (default: lm); rerun the same command to resume. {chosen.name}: {chosen.help}.",
        epilog="config keys of " + chosen.name + " (defaults):\n  " + "\n  ".join(describe(chosen.config)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="a recipe config, e.g. experiments/asr_sld.yaml")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. optim.lr=3e-4 loss.name=mask")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m unified_lm.train") -> int:
    """Parses, trains, and returns the exit status: 2 on bad input, 130 on Ctrl-C."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # The first word names the recipe unless it is an option or an override (then: lm).
    recipe = argv.pop(0) if argv and not argv[0].startswith("-") and "=" not in argv[0] else "lm"
    if recipe not in NAMES:
        print(f"{prog}: error: unknown recipe {recipe!r}; known: {', '.join(NAMES)}", file=sys.stderr)
        return 2
    args = build_parser(prog, recipe).parse_args(argv)
    setup_logging()
    try:
        chosen = get_recipe(recipe)
        fit(chosen, load_config(chosen.config, args.config, args.overrides))
    except UnifiedLMError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # out/last holds the last checkpoint
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
