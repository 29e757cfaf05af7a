"""``--vit-mam``: which encoder MLP layers of the experiment's ViT are MAM."""

import pytest
from torch import nn

from mamext.experiment import options
from mamext.experiment.models_vit import build_vit
from mamext.nn import MAMLinear


@pytest.mark.parametrize("mam, layers", [("linear1", ("linear1",)), ("mlp", ("linear1", "linear2"))])
def test_vit_mam_layers(mam, layers):
    mac, mam_model = build_vit("mac", (8, 8), 10, mam=mam), build_vit("mam", (8, 8), 10, mam=mam)
    names = tuple(f"encoder.layers.{i}.{n}" for i in range(2) for n in layers)
    assert mac.mam_layer_names == mam_model.mam_layer_names == mam_model.pruned_layer_names == names
    for name, module in mam_model.named_modules():
        if isinstance(module, nn.Linear):
            assert isinstance(module, MAMLinear) == (name in names), name
    assert not any(isinstance(m, MAMLinear) for m in mac.modules())


def test_vit_mam_bad_choice():
    with pytest.raises(ValueError, match="build_vit: mam must be one of"):
        build_vit("mam", (8, 8), 10, mam="attention")
    with pytest.raises(SystemExit):
        options.build_parser().parse_args(["--vit-mam", "attention"])


def test_vit_mam_only_with_vit():
    args = options.build_parser().parse_args(["--arch", "mlp", "--vit-mam", "mlp"])
    with pytest.raises(options.UsageError, match="--vit-mam applies to --arch vit only"):
        options.resolve_options(args)
    args = options.build_parser().parse_args(["--arch", "vit", "--vit-mam", "linear1"])
    assert options.resolve_options(args).vit_mam == "linear1"


def test_vit_mam_default_is_both_mlp_layers():
    assert options.resolve_options(options.build_parser().parse_args(["--arch", "vit"])).vit_mam == "mlp"
    assert options.resolve_options(options.build_parser().parse_args(["--arch", "mlp"])).vit_mam is None
