"""Integer-only C export of a mamext.quant.IntegerNetwork: compiled with gcc, bit for bit against PyTorch,
and no floating-point operation in the object code."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from mamext import export
from mamext.compact import compact
from mamext.export._index_encoding import choose_encoding, delta_stream
from mamext.nn import MAMLinear
from mamext.quant import IntegerNetwork, IntLinear, pack_integer, quantize_multiplier

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]


def _compile(result, tmp_path):
    exe = tmp_path / "net"
    subprocess.run(["gcc", *_FLAGS, "-o", str(exe), str(result.source), str(result.main)], check=True,
                   capture_output=True, text=True)
    return exe


def _run(exe, codes):
    text = "\n".join(" ".join(str(v) for v in row) for row in codes.reshape(codes.shape[0], -1).tolist())
    out = subprocess.run([str(exe)], input=text + "\n", capture_output=True, text=True, check=True).stdout
    return torch.tensor([[int(t) for t in line.split()] for line in out.strip().splitlines()], dtype=torch.int8)


def _model():
    torch.manual_seed(2)
    m = nn.Sequential(nn.Flatten(), MAMLinear(64, 48), nn.ReLU(), nn.Linear(48, 40), nn.ReLU(),
                      MAMLinear(40, 300), nn.Dropout(0.1), nn.ReLU(), MAMLinear(300, 10))
    torch_prune.l1_unstructured(m[1], "weight", amount=0.95)
    with torch.no_grad():
        m[3].weight[m[3].weight.abs() < 0.05] = 0
        m[1].weight_orig[5] = 0.0          # an empty neuron
        m[5].weight[7] = -m[5].weight[7].abs()   # a full row with all-negative weights
        m[5].weight[9] = 0.25              # a full row of ties
    torch_prune.l1_unstructured(m[8], "weight", amount=0.97)   # K = 300: int16 or delta indices
    return m.eval()


def _codes(q, x):
    """Quantised samples, then random codes and the extremes (saturation, all at the zero point)."""
    n = x[0].numel()
    torch.manual_seed(5)
    extremes = torch.tensor([[127] * n, [-128] * n, [q.input_zero_point] * n, [127, -128] * (n // 2)],
                            dtype=torch.int8)
    return torch.cat([q.quantize_input(x).reshape(-1, n), torch.randint(-128, 128, (60, n), dtype=torch.int8),
                      extremes])


def test_int8_round_trip_is_bit_exact(tmp_path):
    m = _model()
    x = torch.randn(120, 1, 8, 8)
    q = pack_integer(m, [x[:40]])          # calibrated on part of the data: the rest saturates more
    res = export.to_c(q, tmp_path, (1, 8, 8), torch.int8, name="qnet")
    codes = _codes(q, x)
    got = _run(_compile(res, tmp_path), codes)
    want = q.forward_int8(codes.reshape(-1, 1, 8, 8))
    assert torch.equal(got, want)
    assert (want == 127).any() and (want == -128).any()
    calls = re.findall(r"mamrt_q_\w+(?=\()", res.source.read_text())
    assert calls == ["mamrt_q_mam_c8_u8", "mamrt_q_lin_bm", "mamrt_q_mam_bm", "mamrt_q_mam_c8_d8"]
    assert res.ram_bytes == 300 + 40  # two int8 activation buffers: 48 then 300, 40 then 10
    assert res.input_size == 64 and res.output_size == 10


def test_header_api(tmp_path):
    q = pack_integer(_model(), [torch.randn(30, 1, 8, 8)])
    res = export.to_c(q, tmp_path, (64,), name="qnet")          # the default dtype works as well
    header = res.header.read_text()
    assert "void qnet_infer_int8(const int8_t *input, int8_t *output);" in header
    assert f"#define QNET_INPUT_ZERO_POINT ({q.input_zero_point})" in header
    assert f"#define QNET_OUTPUT_ZERO_POINT ({q.output_zero_point})" in header
    scale = re.search(r"#define QNET_INPUT_SCALE (\S+)f", header).group(1)
    assert float.fromhex(scale) == float(torch.tensor(q.input_scale, dtype=torch.float32))
    assert re.search(r"#define QNET_OUTPUT_SCALE 0x\S+f", header)
    assert f"QNET_FLASH_BYTES {res.flash_bytes}" in header and f"QNET_RAM_BYTES {res.ram_bytes}" in header
    for path in (res.source, tmp_path / "mam_runtime_int.h"):
        code = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
        assert not re.search(r"\b(float|double)\b", code)
    assert sorted(p.name for p in res.runtime) == ["mam_runtime_int.h", "mam_semantics.h"]


def _int_layer(weight, bias, scales, **kwargs) -> IntLinear:
    keep = weight != 0
    mult, shift = zip(*(quantize_multiplier(s) for s in scales))
    return IntLinear(weight.shape[1], weight.shape[0], weight[keep], keep.nonzero()[:, 1], keep.sum(1),
                     torch.tensor(bias), torch.tensor(mult), torch.tensor(shift), **kwargs)


def _adversarial_network() -> IntegerNetwork:
    """Rows with every rule (empty, full all-negative, pruned all-negative, ties, saturating), on rows."""
    w = torch.tensor([[-3, -5, -7, -1], [-3, 0, -7, 0], [0, 0, 0, 0], [4, 4, 0, 4], [127, 127, 127, 127],
                      [-127, 0, 0, 127]])
    first = _int_layer(w[:4], [1, 2, 3, 4], (0.01, 0.02, 0.003, 0.5), mam=True, input_zero_point=0,
                       output_zero_point=-5, candidate_width=5)       # compacted: zero candidate in every row
    second = _int_layer(w, [5, -7, 100, 0, 9, -3], (0.01, 0.02, 0.003, 0.5, 0.9, 1.5), mam=False,
                        input_zero_point=-5, output_zero_point=3, low=3)
    third = _int_layer(w.t()[:, :6].contiguous(), [0, 1, -1, 2], (0.2, 0.3, 0.05, 0.9), mam=True,
                       input_zero_point=3, output_zero_point=-1)
    return IntegerNetwork([first, second, third, nn.Flatten()], input_scale=0.1,
                          input_zero_point=0, output_scale=0.2, output_zero_point=-1)


def test_adversarial_rows_and_rows_activation(tmp_path):
    q = _adversarial_network()
    res = export.to_c(q, tmp_path, (3, 4), torch.int8)       # the layers run on 3 rows of 4 inputs
    codes = torch.cat([torch.randint(-128, 128, (200, 12), dtype=torch.int8),
                       torch.tensor([[127] * 12, [-128] * 12, [0] * 12, [-5] * 12], dtype=torch.int8)])
    got = _run(_compile(res, tmp_path), codes)
    assert torch.equal(got, q.forward_int8(codes.reshape(-1, 3, 4)))
    assert res.output_size == 12


def test_every_encoding_round_trips(tmp_path):
    torch.manual_seed(4)
    m = nn.Sequential(MAMLinear(3000, 20), nn.ReLU(), nn.Linear(20, 400), nn.ReLU(), MAMLinear(400, 5),
                      nn.ReLU(), MAMLinear(5, 300), nn.ReLU(), nn.Linear(300, 7)).eval()
    with torch.no_grad():
        m[0].weight[m[0].weight.abs() > 0.0006] = 0   # ~3% kept
        m[0].weight[3, ::11] = 0.01                   # 273 kept in one row: uint16 counts
        m[0].weight[5] = 0
        m[0].weight[5, 0], m[0].weight[5, 2999] = 0.01, -0.01   # a 2999-column gap: escape bytes
        keep = torch.zeros(5, 400, dtype=torch.bool)
        keep[torch.arange(5), 300 + 20 * torch.arange(5)] = True
        m[4].weight[~keep] = 0                        # one far column per row: int16 (2 B) ties deltas
        m[8].weight[m[8].weight.abs() < 0.045] = 0    # ~20% kept, K = 300: a bitmap beats int16
    q = pack_integer(m, [torch.randn(50, 3000)])
    res = export.to_c(q, tmp_path, (3000,), torch.int8)
    calls = re.findall(r"mamrt_q_\w+(?=\()", res.source.read_text())
    assert calls == ["mamrt_q_mam_c16_d8", "mamrt_q_lin_bm", "mamrt_q_mam_c8_i16", "mamrt_q_mam_bm",
                     "mamrt_q_lin_bm"]
    codes = torch.cat([torch.randint(-128, 128, (40, 3000), dtype=torch.int8), q.quantize_input(torch.randn(20, 3000))])
    assert torch.equal(_run(_compile(res, tmp_path), codes), q.forward_int8(codes))


def test_choose_encoding():
    indices = torch.tensor([0, 255, 256, 700, 3, 4])
    counts = torch.tensor([4, 0, 2])
    assert delta_stream(indices.tolist(), counts.tolist()) == [1, 255, 1, 0, 189, 4, 1]
    enc = choose_encoding(indices, counts, 701)
    assert (enc.kernel_suffix, enc.nbytes) == ("c8_d8", 7 + 3)
    assert enc.csr_bytes == 6 * 2 + 4 * 4
    enc = choose_encoding(torch.tensor([1, 2]), torch.tensor([2]), 256)
    assert (enc.kernel_suffix, enc.idx_type) == ("c8_u8", "uint8_t")
    wide = choose_encoding(torch.arange(70000) * 14, torch.tensor([70000]), 10 ** 6)
    assert (wide.kernel_suffix, wide.nbytes) == ("c32_d8", 70000 + 4)
    # 3 of 4 connections kept in each of 4 rows: a 2-byte bitmap beats 12 indices and 4 counts
    rows = torch.tensor([0, 1, 3, 1, 2, 3, 0, 2, 3, 0, 1, 2])
    enc = choose_encoding(rows, torch.tensor([3, 3, 3, 3]), 4)
    assert (enc.kernel_suffix, enc.idx_values, enc.nbytes) == ("bm", [0b11101011, 0b01111101], 2)


def test_compacted_network_exports_bit_exact(tmp_path):
    torch.manual_seed(6)
    m = nn.Sequential(MAMLinear(64, 128), nn.ReLU(), MAMLinear(128, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                      MAMLinear(32, 10)).eval()
    for i, amount in ((0, 0.99), (2, 0.98), (4, 0.9), (6, 0.8)):
        torch_prune.l1_unstructured(m[i], "weight", amount=amount)
    x = torch.randn(100, 64)
    q = pack_integer(m, [x])
    small, report = compact(q)
    assert report.neurons_removed > 0
    full = export.to_c(q, tmp_path / "full", (64,), torch.int8)
    res = export.to_c(small, tmp_path / "small", (64,), torch.int8)
    assert res.flash_bytes < full.flash_bytes
    codes = torch.cat([q.quantize_input(x), torch.randint(-128, 128, (50, 64), dtype=torch.int8)])
    got = _run(_compile(res, tmp_path / "small"), codes)
    assert torch.equal(got, q.forward_int8(codes))


def _object_files(tmp_path):
    q = pack_integer(_model(), [torch.randn(30, 1, 8, 8)])
    return export.to_c(q, tmp_path, (64,), torch.int8)


def test_no_float_in_host_object_code(tmp_path):
    res = _object_files(tmp_path)
    # -mgeneral-regs-only: any floating-point operation is a compile error on x86-64
    flags = ["-mgeneral-regs-only"] if subprocess.run(["gcc", "-dumpmachine"], capture_output=True,
                                                       text=True).stdout.startswith("x86_64") else []
    subprocess.run(["gcc", *_FLAGS, *flags, "-c", "-o", str(tmp_path / "net.o"), str(res.source)], check=True,
                   capture_output=True, text=True)
    symbols = subprocess.run(["nm", str(tmp_path / "net.o")], capture_output=True, text=True, check=True).stdout
    assert not re.search(r"\b(__\w*(sf|df)\w*|__float\w*|__fix\w*)\b", symbols)


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs arm-none-eabi-gcc")
@pytest.mark.parametrize("cpu", ["cortex-m0plus", "cortex-m3", "cortex-m4"])
def test_no_float_in_cortex_m_object_code(tmp_path, cpu):
    res = _object_files(tmp_path)
    obj = tmp_path / "net.o"
    fpu = ["-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"] if cpu == "cortex-m4" else []
    subprocess.run(["arm-none-eabi-gcc", *_FLAGS, f"-mcpu={cpu}", "-mthumb", *fpu, "-c", "-o", str(obj),
                    str(res.source)], check=True, capture_output=True, text=True)
    disassembly = subprocess.run(["arm-none-eabi-objdump", "-d", str(obj)], capture_output=True, text=True,
                                 check=True).stdout
    instructions = [line.split("\t")[2] for line in disassembly.splitlines() if line.count("\t") >= 2]
    assert instructions and not [i for i in instructions if i.startswith("v")]   # vmul, vadd, vcvt, vldr...
    undefined = subprocess.run(["arm-none-eabi-nm", "-u", str(obj)], capture_output=True, text=True,
                               check=True).stdout.split()
    assert not [s for s in undefined if re.match(r"__aeabi_(f|d|i2f|i2d|ui2f|ui2d|l2f|l2d)", s)
                or re.search(r"(sf|df)\d", s)]


def test_errors(tmp_path):
    q = pack_integer(_model(), [torch.randn(10, 1, 8, 8)])
    with pytest.raises(ValueError, match="clashes with the runtime"):
        export.to_c(q, tmp_path, (64,), name="mam_runtime_int")
    with pytest.raises(ValueError, match="expects inputs with last dimension 64"):
        export.to_c(q, tmp_path, (65,))
    with pytest.raises(TypeError, match="dtype"):
        export.to_c(q, tmp_path, (64,), torch.float16)


def test_index_encodings_option(tmp_path):
    m = _model()
    q = pack_integer(m, [torch.randn(30, 1, 8, 8)])
    codes = _codes(q, torch.randn(10, 1, 8, 8))
    want = q.forward_int8(codes.reshape(-1, 1, 8, 8))
    expected = {("index", "delta"): ["mamrt_q_mam_c8_u8", "mamrt_q_lin_c8_u8", "mamrt_q_mam_c8_u8",
                                     "mamrt_q_mam_c8_d8"],
                ("delta",): ["mamrt_q_mam_c8_d8", "mamrt_q_lin_c8_d8", "mamrt_q_mam_c8_d8", "mamrt_q_mam_c8_d8"],
                ("bitmap",): ["mamrt_q_mam_bm", "mamrt_q_lin_bm", "mamrt_q_mam_bm", "mamrt_q_mam_bm"]}
    sizes = {}
    for encodings, calls in expected.items():
        folder = tmp_path / "_".join(encodings)
        res = export.to_c(q, folder, (1, 8, 8), torch.int8, index_encodings=encodings)
        assert re.findall(r"mamrt_q_\w+(?=\()", res.source.read_text()) == calls
        assert torch.equal(_run(_compile(res, folder), codes), want)
        sizes[encodings] = res.flash_bytes
    assert export.to_c(q, tmp_path / "all", (64,)).flash_bytes <= min(sizes.values())


def test_index_encodings_errors(tmp_path):
    q = pack_integer(nn.Linear(4, 2), [torch.randn(5, 4)])
    with pytest.raises(ValueError, match="at least one of"):
        export.to_c(q, tmp_path, (4,), index_encodings=["bitmaps"])
    with pytest.raises(ValueError, match="at least one of"):
        export.to_c(q, tmp_path, (4,), index_encodings=[])
    with pytest.raises(TypeError, match="collection"):
        export.to_c(q, tmp_path, (4,), index_encodings="bitmap")
    with pytest.raises(ValueError, match="integer networks"):
        export.to_c(nn.Linear(4, 2), tmp_path, (4,), index_encodings=["index"])
    with pytest.raises(ValueError, match="too large for a bitmap"):
        choose_encoding(torch.tensor([0]), torch.tensor([1, 0, 0]), 10 ** 9, frozenset({"bitmap"}))


def test_standalone_relu_identity_dropout_round_trip(tmp_path):
    torch.manual_seed(7)
    m = nn.Sequential(nn.Identity(), nn.ReLU(), nn.Dropout(0.5), MAMLinear(6, 5), nn.ReLU(), nn.Flatten(),
                      nn.ReLU(), nn.Linear(10, 3)).eval()
    x = torch.randn(40, 2, 6)
    q = pack_integer(m, [x])
    res = export.to_c(q, tmp_path, (2, 6), torch.int8)
    text = res.source.read_text()
    # the ReLU on the input and the one after the Flatten are clamps; the one after MAMLinear is fused
    assert text.count("mamrt_q_clamp(") == 2
    codes = torch.cat([q.quantize_input(x).reshape(40, 12), torch.randint(-128, 128, (40, 12), dtype=torch.int8)])
    assert torch.equal(_run(_compile(res, tmp_path), codes), q.forward_int8(codes.reshape(-1, 2, 6)).reshape(-1, 3))
