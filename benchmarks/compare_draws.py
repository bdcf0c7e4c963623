"""Check that this tree's emergence_init_ draws exactly what another version's does.

Both versions initialise copies of the same models, with the same global seed and generator
seed, for every built-in spec, a BERT and a GPT-2 from small configs, every base, several
alphas, head on/off, traced or registration order and global or explicit generator; every
parameter and buffer, the unit schedule and the global RNG state afterwards must be equal bit
for bit. Prints the number of configurations compared.

    git archive main src | tar -x -C /tmp/old      # the version to compare against
    python benchmarks/compare_draws.py --against /tmp/old/src
"""

from __future__ import annotations

import argparse
import copy
import importlib
import itertools
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

SPECS = [
    "mlp:12-16x3-4", "mlp-bn:12-16x4-4", "cnn:2x8x8-4-M-6-3", "cnn-bn:2x8x8-4-4-M-6-3",
    "resnet:2x8x8-4x1-6x2-3", "resnet-bn:2x8x8-4x2-6x1-3", "transformer:tiny,vocab=50",
]  # fmt: skip
BASES = [
    "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "orthogonal", "keep",
]  # fmt: skip
ALPHAS = [1.0, 0.7, 1.3, 2.0, 3.7]


def load(src: Path) -> tuple[ModuleType, ModuleType]:
    """Import the emergeinit package found under ``src``, fresh."""
    for name in [k for k in sys.modules if k == "emergeinit" or k.startswith("emergeinit.")]:
        del sys.modules[name]
    sys.path.insert(0, str(src))
    try:
        return importlib.import_module("emergeinit"), importlib.import_module("emergeinit.models")
    finally:
        sys.path.pop(0)


def hugging_face(name: str) -> tuple[nn.Module, Any]:
    import transformers

    ids = torch.Generator().manual_seed(0)
    if name == "bert":
        config = transformers.BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=16,
        )  # fmt: skip
        return transformers.BertModel(config), {
            "input_ids": torch.randint(1, 50, (2, 6), generator=ids)
        }
    config = transformers.GPT2Config(vocab_size=40, n_embd=16, n_layer=2, n_head=2, n_positions=16)
    return transformers.GPT2LMHeadModel(config), {
        "input_ids": torch.randint(0, 40, (2, 5), generator=ids)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, required=True, help="the other version's src/")
    args = parser.parse_args()
    old, _ = load(args.against)
    new, models = load(Path(__file__).resolve().parents[1] / "src")
    assert old.__file__ != new.__file__, "both imports found the same package"
    checked = 0
    for spec in [*SPECS, "bert", "gpt2"]:
        options = itertools.product(BASES, ALPHAS, (True, False), (True, False), (True, False))
        for base, alpha, head, trace, use_generator in options:
            torch.manual_seed(0)
            if spec in ("bert", "gpt2"):
                model, x = hugging_face(spec)
            else:
                model, x = models.build_model(spec), models.example_input(spec, 4)
            reports, states, after = [], [], []
            for version in (old, new):
                candidate = copy.deepcopy(model)
                torch.manual_seed(123)
                generator = torch.Generator().manual_seed(9) if use_generator else None
                report = version.emergence_init_(
                    candidate, alpha, base=base, head=head,
                    example_input=x if trace else None, generator=generator,
                )  # fmt: skip
                after.append(torch.rand(2))
                reports.append([(u.name, u.exponent, u.scale) for u in report.units])
                states.append(candidate.state_dict())
            where = (spec, base, alpha, head, trace, use_generator)
            assert reports[0] == reports[1], where
            assert torch.equal(after[0], after[1]), where
            for key, value in states[0].items():
                assert torch.equal(value, states[1][key]), (*where, key)
            checked += 1
    print(f"identical: {checked} configurations (spec x base x alpha x head x trace x generator)")


if __name__ == "__main__":
    main()
