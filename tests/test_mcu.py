"""Cortex-M firmware (mamext.mcu): build, run under QEMU, flash/RAM figures, fit to a budget.

The firmware tests need arm-none-eabi-gcc, newlib and qemu-system-arm: they
skip without them, except under CI (CI=true), where a missing tool fails.
"""

from __future__ import annotations

import os
import subprocess

import pytest
import torch
from torch import nn

import mamext
import mamext.mcu as mcu
from mamext.mcu._compile import compile_firmware
from mamext.mcu._elf import symbol_names
from mamext.mcu._firmware import Firmware
from mamext.mcu._io import NetworkIO
from mamext.mcu._targets import RAM_LENGTH, TARGETS
from mamext.mcu._tools import Compiler, find_qemu
from mamext.nn import MAMLinear
from mamext.prune import prune_model
from mamext.sparse import PackedLayer, pack

FPU_TARGETS = ["cortex-m4", "cortex-m7"]
DTYPES = [torch.float32, torch.int8]


def _tools_missing():
    try:
        Compiler.find()
        find_qemu()
    except mcu.ToolsMissingError as e:
        return str(e)
    return None


@pytest.fixture(scope="module")
def tools():
    """Skip without the Arm tools, except in CI, which must run the firmware tests."""
    missing = _tools_missing()
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the firmware tests: {missing}")
    if missing:
        pytest.skip(missing)


def _mlp(seed=0, fraction=0.3):
    torch.manual_seed(seed)
    model = nn.Sequential(MAMLinear(20, 16), nn.ReLU(), MAMLinear(16, 12), nn.ReLU(), nn.Linear(12, 5))
    return prune_model(model, fraction).eval()


def _inputs():
    torch.manual_seed(1)
    x = torch.randn(6, 20)
    x[1] = 0.0                      # all-zero sample
    x[2] = -x[2].abs() * 1e3        # all negative, large
    x[3, ::2] = x[3, 1::2]          # repeated values: tied products
    return x


@pytest.fixture(scope="module")
def firmwares(tools, tmp_path_factory):
    model = _mlp()
    root = tmp_path_factory.mktemp("mcu")
    return model, {(target, dtype): mcu.build(model, root / f"{target}_{str(dtype)[6:]}", (20,), target=target,
                                              dtype=dtype)
                   for target in FPU_TARGETS for dtype in DTYPES}


@pytest.mark.parametrize("target", FPU_TARGETS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "int8"])
def test_outputs_equal_pytorch(firmwares, target, dtype):
    model, built = firmwares
    firmware = built[(target, dtype)]
    x = _inputs()
    out, instructions = firmware.run(x)
    with torch.no_grad():
        packed = pack(model, dtype)(x)
        dense = model(x)
    assert out.dtype == torch.float32 and out.shape == (6, 5)
    assert torch.equal(out, packed)  # the packed model is the C's exact reference, float and int8
    if dtype == torch.float32:
        torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-5 * float(dense.abs().max()))
    assert isinstance(instructions, float) and instructions > 100


def test_instruction_counts(firmwares):
    _, built = firmwares
    firmware = built[("cortex-m4", torch.float32)]
    x = _inputs()
    _, counts = firmware.run(x, per_sample=True)
    _, again = firmware.run(x, per_sample=True)
    _, coarse = firmware.run(x, per_sample=True, repeats=1)
    assert counts.dtype == torch.int64 and counts.shape == (6,)
    assert torch.equal(counts, again)                       # -icount: deterministic
    assert (coarse - counts).abs().max() <= 80              # one repeat: within two SysTick ticks
    _, mean = firmware.run(x[:1])
    assert mean == float(counts[0])


def test_tick_length_is_checked():
    from mamext.mcu._qemu import EmulationError, _check_tick_length
    _check_tick_length(5000, TARGETS["cortex-m4"])  # 200000 instructions in 5000 ticks: 40 per tick
    with pytest.raises(EmulationError, match="a SysTick tick lasted 50.00 instructions, not 40"):
        _check_tick_length(4000, TARGETS["cortex-m4"])


def test_single_sample_and_bad_inputs(firmwares):
    model, built = firmwares
    firmware = built[("cortex-m7", torch.int8)]
    x = _inputs()[4]
    out, _ = firmware.run(x, repeats=1)
    with torch.no_grad():
        assert torch.equal(out, pack(model, torch.int8)(x.unsqueeze(0))[0])
    with pytest.raises(ValueError, match=r"inputs must have shape \(20,\)"):
        firmware.run(torch.zeros(3, 21))
    with pytest.raises(TypeError, match="floating point"):
        firmware.run(torch.zeros(2, 20, dtype=torch.int64))
    with pytest.raises(ValueError, match="repeats"):
        firmware.run(x, repeats=0)


def _berkeley_size(elf):
    text = subprocess.run(["arm-none-eabi-size", "-B", str(elf)], capture_output=True, text=True, check=True).stdout
    return [int(v) for v in text.splitlines()[1].split()[:3]]


@pytest.mark.parametrize("target", FPU_TARGETS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "int8"])
def test_flash_and_ram_match_size_tool(firmwares, target, dtype):
    _, built = firmwares
    firmware = built[(target, dtype)]
    text, data, bss = _berkeley_size(firmware.elf)
    assert (firmware.text_bytes, firmware.data_bytes, firmware.bss_bytes) == (text, data, bss)
    assert firmware.flash_bytes == text + data
    assert 0 < firmware.stack_bytes < RAM_LENGTH
    assert firmware.ram_bytes == data + bss + firmware.stack_bytes
    assert firmware.stack_bytes <= firmware.stack_bound_bytes
    assert firmware.ram_bytes <= firmware.ram_bound_bytes
    # the network's constant data is in flash, its buffers in RAM
    assert firmware.flash_bytes > firmware.network.flash_bytes
    assert firmware.bss_bytes >= firmware.network.ram_bytes


def test_cortex_m3_refuses_floating_point():
    model = _mlp()
    for dtype in DTYPES:
        with pytest.raises(ValueError, match="'cortex-m3' has no FPU"):
            mcu.build(model, "unused", (20,), target="cortex-m3", dtype=dtype)


def test_unsupported_targets_and_arguments():
    model = _mlp()
    with pytest.raises(ValueError, match="no Cortex-M0\\+ machine.*supported targets: 'cortex-m3', 'cortex-m4', "
                                         "'cortex-m7'"):
        mcu.build(model, "unused", (20,), target="cortex-m0plus")
    with pytest.raises(ValueError, match="unsupported target 'cortex-a53'"):
        mcu.build(model, "unused", (20,), target="cortex-a53")
    with pytest.raises(TypeError, match="target must be a str"):
        mcu.build(model, "unused", (20,), target=4)
    with pytest.raises(TypeError, match="dtype must be torch.float32 or torch.int8"):
        mcu.build(model, "unused", (20,), dtype=torch.float64)
    with pytest.raises(ValueError, match="calibration= applies to dtype=torch.int8"):
        mcu.build(model, "unused", (20,), dtype=torch.float32, calibration=[torch.zeros(1, 20)])
    with pytest.raises(ValueError, match="clashes with the firmware files"):
        mcu.build(model, "unused", (20,), name="mcu")


def test_missing_tools_name_the_debian_packages(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(mcu.ToolsMissingError, match="gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"):
        mcu.build(_mlp(), tmp_path / "fw", (20,), target="cortex-m4")
    assert not (tmp_path / "fw").exists()


_SATURATING_NET = """#include <stdint.h>
#include "tripler.h"
void tripler_infer_int8(const int8_t *input, int8_t *output)
{
    int32_t i;
    for (i = 0; i < TRIPLER_SIZE; ++i) {
        const int32_t v = 3 * (int32_t)input[i];
        output[i] = (int8_t)(v > 127 ? 127 : v < -128 ? -128 : v);
    }
}
"""


def test_integer_firmware_on_cortex_m3(tools, tmp_path):
    """The firmware's integer sample path on the core without FPU (a hand-written saturating network)."""
    (tmp_path / "tripler.h").write_text("#include <stdint.h>\n#define TRIPLER_SIZE 7\n"
                                        "void tripler_infer_int8(const int8_t *input, int8_t *output);\n")
    (tmp_path / "tripler.c").write_text(_SATURATING_NET)
    io = NetworkIO(header="tripler.h", infer="tripler_infer_int8", input_dtype=torch.int8,
                   output_dtype=torch.int8, input_size=7, output_size=7)
    target = TARGETS["cortex-m3"]
    firmware = Firmware(compile_firmware(tmp_path, ["tripler.c"], io, target, "tripler.elf"), target, io, (7,),
                        network=None, reference=None)
    x = torch.tensor([[0, 1, -1, 42, 43, -42, -43], [127, -128, 5, -5, 100, -100, 0]], dtype=torch.int8)
    out, instructions = firmware.run(x)
    assert torch.equal(out, (3 * x.to(torch.int32)).clamp(-128, 127).to(torch.int8))
    assert instructions > 7 and firmware.stack_bytes > 0
    assert firmware.flash_bytes == sum(_berkeley_size(firmware.elf)[:2])


def test_soft_float_refused_on_cortex_m3(tools, tmp_path):
    (tmp_path / "halver.h").write_text("void halver_infer(const float *input, float *output);\n")
    (tmp_path / "halver.c").write_text('#include "halver.h"\n'
                                       "void halver_infer(const float *input, float *output) "
                                       "{ output[0] = input[0] * 0.5f; }\n")
    io = NetworkIO(header="halver.h", infer="halver_infer", input_dtype=torch.float32,
                   output_dtype=torch.float32, input_size=1, output_size=1)
    with pytest.raises(mcu.FirmwareBuildError, match="no FPU.*software floating point"):
        compile_firmware(tmp_path, ["halver.c"], io, TARGETS["cortex-m3"], "halver.elf")


def test_image_larger_than_the_board_is_sized_but_not_run(tools, tmp_path):
    """fit sizes networks beyond the emulated board's 4 MiB of flash; build refuses to link them."""
    (tmp_path / "big.h").write_text("#include <stdint.h>\nvoid big_infer_int8(const int8_t *input, int8_t *output);\n")
    (tmp_path / "big.c").write_text('#include "big.h"\nstatic const int8_t table[5 << 20] = {1};\n'
                                    "void big_infer_int8(const int8_t *input, int8_t *output) "
                                    "{ output[0] = table[(uint8_t)input[0]]; }\n")
    io = NetworkIO(header="big.h", infer="big_infer_int8", input_dtype=torch.int8, output_dtype=torch.int8,
                   input_size=1, output_size=1)
    target = TARGETS["cortex-m4"]
    with pytest.raises(mcu.FirmwareBuildError, match="FLASH"):
        compile_firmware(tmp_path, ["big.c"], io, target, "big.elf")
    compiled = compile_firmware(tmp_path, ["big.c"], io, target, "big.elf", sizing_only=True)
    assert compiled.sizes.text > 5 << 20
    firmware = Firmware(compiled, target, io, (1,), network=None, reference=None)
    with pytest.raises(RuntimeError, match="linked for sizing only"):
        firmware.run(torch.zeros(1, dtype=torch.int8))


# --------------------------------------------------------------------------- integer-only int8 (mamext.quant)

@pytest.fixture(scope="module")
def quant():
    return pytest.importorskip("mamext.quant", reason="the integer-only path (mamext.quant) is not in this tree")


@pytest.mark.parametrize("target", ["cortex-m3", "cortex-m4", "cortex-m7"])
def test_integer_only_firmware_bit_exact(tools, quant, target, tmp_path):
    model = _mlp()
    calibration = [torch.randn(64, 20, generator=torch.Generator().manual_seed(5))]
    firmware = mcu.build(model, tmp_path, (20,), target=target, dtype=torch.int8, calibration=calibration)
    integer = firmware.reference
    assert isinstance(integer, quant.IntegerNetwork)
    x = _inputs()
    x[5] = 1e3  # saturates the input codes
    out, instructions = firmware.run(x)
    with torch.no_grad():
        assert torch.equal(out, integer(x))
        codes = integer.quantize_input(x)
        out_from_codes, _ = firmware.run(codes, repeats=1)
        assert torch.equal(out_from_codes, integer.dequantize_output(integer.forward_int8(codes)))
    assert instructions > 100 and firmware.ram_bytes == sum(_berkeley_size(firmware.elf)[1:]) + firmware.stack_bytes
    assert not [n for n in symbol_names(firmware.elf) if n.startswith("__aeabi_f") or n.startswith("__aeabi_d")]
    # an IntegerNetwork itself takes the integer path without calibration
    again = mcu.build(integer, tmp_path / "again", (20,), target=target)
    assert torch.equal(again.run(x, repeats=1)[0], out)


def test_integer_only_fit_on_cortex_m3(tools, quant, dense_model):
    data = _labelled(dense_model)
    result = mcu.fit(dense_model, data, flash_bytes=10 ** 6, ram_bytes=10 ** 6, target="cortex-m3",
                     fractions=(0.5, 0.1), calibration=[batch[0] for batch in data])
    assert isinstance(result.model, quant.IntegerNetwork) and result.fraction in (0.5, 0.1)
    assert result.accuracy == max(row.accuracy for row in result.table)


# --------------------------------------------------------------------------- fit

def _labelled(model, n=256, batch=64):
    torch.manual_seed(2)
    x = torch.randn(n, 20)
    with torch.no_grad():
        y = model(x).argmax(-1)
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


@pytest.fixture(scope="module")
def dense_model():
    torch.manual_seed(3)
    return nn.Sequential(MAMLinear(20, 32), nn.ReLU(), MAMLinear(32, 5)).eval()


@pytest.fixture(scope="module")
def roomy_fit(tools, dense_model):
    data = _labelled(dense_model)
    return mcu.fit(dense_model, data, flash_bytes=10 ** 6, ram_bytes=10 ** 6, fractions=(1.0, 0.3, 0.05),
                   dtype=torch.float32)


def test_fit_takes_the_most_accurate_when_everything_fits(roomy_fit, dense_model):
    assert [row.fraction for row in roomy_fit.table] == [1.0, 0.3, 0.05]
    assert all(row.fits for row in roomy_fit.table)
    assert roomy_fit.fraction == 1.0 and roomy_fit.accuracy == 1.0
    flash = [row.flash_bytes for row in roomy_fit.table]
    assert flash[0] > flash[1] > flash[2]
    assert "| 1 | 800/800 |" in roomy_fit.markdown() and "chosen" in roomy_fit.markdown()
    # the input model is untouched: not pruned, not packed
    assert not any(isinstance(m, PackedLayer) or hasattr(m, "weight_mask") for m in dense_model.modules())


def test_fit_respects_the_budget(roomy_fit, dense_model, tmp_path):
    middle = roomy_fit.table[1]
    result = mcu.fit(dense_model, _labelled(dense_model), flash_bytes=middle.flash_bytes,
                     ram_bytes=middle.ram_bytes, fractions=(1.0, 0.3, 0.05), dtype=torch.float32)
    assert result.fraction == 0.3 and not result.table[0].fits
    assert result.flash_bytes <= middle.flash_bytes and result.ram_bytes <= middle.ram_bytes
    assert any(isinstance(m, PackedLayer) for m in result.model.modules())
    # the chosen model, built and measured, stays within the budget
    firmware = mcu.build(result.model, tmp_path / "chosen", (20,), dtype=torch.float32)
    assert firmware.flash_bytes <= middle.flash_bytes and firmware.ram_bytes <= middle.ram_bytes


def test_fit_int8_and_impossible_budget(tools, dense_model):
    data = _labelled(dense_model)
    result = mcu.fit(dense_model, data, flash_bytes=10 ** 6, ram_bytes=10 ** 6, fractions=(0.2,))
    assert all(m.is_int8 for m in result.model.modules() if isinstance(m, PackedLayer))
    with pytest.raises(ValueError, match="no pruned network fits 100 B of flash"):
        mcu.fit(dense_model, data, flash_bytes=100, ram_bytes=10 ** 6, fractions=(0.2, 0.01))


@pytest.mark.parametrize("calibrated", [False, True], ids=["float32", "integer-only"])
def test_fit_compacts(tools, dense_model, calibrated):
    pytest.importorskip("mamext.compact", reason="compaction (mamext.compact) is not in this tree")
    data = _labelled(dense_model)
    options = dict(flash_bytes=10 ** 6, ram_bytes=10 ** 6, fractions=(0.2,))
    options.update(dict(calibration=[b[0] for b in data]) if calibrated else dict(dtype=torch.float32))
    compacted = mcu.fit(dense_model, data, compact=True, **options)
    plain = mcu.fit(dense_model, data, compact=False, **options)
    assert compacted.table[0].neurons_removed > 0 and plain.table[0].neurons_removed is None
    assert compacted.flash_bytes < plain.flash_bytes
    assert compacted.accuracy == plain.accuracy  # compaction is exact


def test_fit_argument_errors(dense_model):
    data = _labelled(dense_model, n=8)
    with pytest.raises(ValueError, match="flash_bytes must be a positive int"):
        mcu.fit(dense_model, data, flash_bytes=0, ram_bytes=1000)
    with pytest.raises(ValueError, match="score must be one of"):
        mcu.fit(dense_model, data, flash_bytes=1000, ram_bytes=1000, score="nope")
    with pytest.raises(ValueError, match="fraction in \\(0, 1\\]"):
        mcu.fit(dense_model, data, flash_bytes=1000, ram_bytes=1000, fractions=(0.5, 2.0))
    with pytest.raises(ValueError, match="data is empty"):
        mcu.fit(dense_model, [], flash_bytes=1000, ram_bytes=1000)


def test_lazy_attribute():
    assert mamext.mcu is mcu
