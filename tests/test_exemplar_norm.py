"""Properties of the EN layer: ratios, equivalences, invariances, and the hand-written backward
against autograd of the independently written formula (every normalizer set, mode, option) - for
both implementations of the layer: the C++ kernel (CPU, float32/64) and the Python one."""

import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from en_analysis.core.errors import UserError
from en_analysis.nn import ExemplarNorm2d, cpu_kernel
from en_analysis.nn.exemplar_norm import _moments

TOL = dict(atol=2e-5, rtol=1e-4)


@pytest.fixture(params=["kernel", "python"])
def implementation(request):
    """Run EN layers through the C++ kernel or through the Python implementation."""
    cpu_kernel.use(request.param == "kernel")
    yield request.param
    cpu_kernel.use(True)


def _made_by(y: torch.Tensor) -> str:
    """Which implementation computed y: the kernel's C++ autograd node or the Python one's."""
    return "kernel" if "CppNode" in y.grad_fn.name() else "python"


def test_the_kernel_is_built_here():
    """The test machine has g++: were the build broken, the kernel tests below would silently
    run the Python layer twice."""
    assert cpu_kernel.available()
    y = ExemplarNorm2d(8)(torch.randn(2, 8, 3, 3, requires_grad=True))
    assert _made_by(y) == "kernel"


def test_the_kernel_is_called_by_the_names_of_its_schema():
    """The Python side names every argument of ``torch.ops.en_layer.exemplar_norm`` as the C++
    schema does, in its order."""
    from en_analysis.nn.exemplar_norm import _KernelArgs

    assert cpu_kernel.available()
    schema = torch.ops.en_layer.exemplar_norm.default._schema
    assert [a.name for a in schema.arguments] == list(_KernelArgs._fields)


def _layer(c=8, **kw):
    torch.manual_seed(0)
    layer = ExemplarNorm2d(c, **kw)
    with torch.no_grad():  # random affine and a ratio net that is not at its uniform start
        if layer.affine:
            layer.weight.uniform_(0.5, 1.5)
            layer.bias.uniform_(-0.5, 0.5)
        layer.ratio_fc2.weight.normal_(0, 5.0)
        layer.ratio_fc2.bias.normal_(0, 0.5)
        layer.ratio_bias.normal_(0, 0.5)
    return layer


def _x(n=6, c=8, h=5, w=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g) * 3 + torch.linspace(-2, 2, c)[:, None, None]


def test_ratios_are_a_distribution_per_sample(implementation):
    layer = _layer()
    layer(_x())
    lam = layer.last_ratios
    assert lam.shape == (6, 3)
    assert (lam >= 0).all()
    torch.testing.assert_close(lam.sum(1), torch.ones(6))
    assert lam.std(0).max() > 1e-3  # per-sample, not one shared mixture


def test_fresh_layer_starts_at_uniform_ratios():
    layer = ExemplarNorm2d(8)
    layer(_x())
    torch.testing.assert_close(layer.last_ratios, torch.full((6, 3), 1 / 3))


@pytest.mark.parametrize("train", [True, False])
def test_one_hot_ratios_equal_bn_in_ln(train, implementation):
    x = _x()
    en = _layer()
    bn = nn.BatchNorm2d(8)
    bn.load_state_dict(
        {k: v for k, v in en.state_dict().items() if k in bn.state_dict()}, strict=True
    )
    if not train:  # give both the same non-trivial running statistics first
        en.fix_ratios([0, 0, 1])
        for _ in range(3):
            en(x * 1.5 + 0.3)
            bn(x * 1.5 + 0.3)
    en.train(train)
    bn.train(train)
    w, b = en.weight, en.bias
    expected = {
        "in": F.instance_norm(x, weight=w, bias=b, eps=en.eps),
        "ln": F.group_norm(x, 1, w, b, en.eps),
        "bn": bn(x),
    }
    for k, name in enumerate(en.normalizers):
        one_hot = copy.deepcopy(en)
        one_hot.fix_ratios(torch.eye(3)[k])
        torch.testing.assert_close(one_hot(x), expected[name], **TOL, msg=name)
        torch.testing.assert_close(one_hot.running_mean, bn.running_mean, **TOL)
        torch.testing.assert_close(one_hot.running_var, bn.running_var, **TOL)


def test_one_hot_gn_equals_group_norm(implementation):
    x = _x(c=8)
    en = _layer(normalizers=("in", "gn"), gn_groups=4)
    en.fix_ratios([0, 1])
    torch.testing.assert_close(en(x), F.group_norm(x, 4, en.weight, en.bias, en.eps), **TOL)


NORMALIZER_SETS = [
    ("in", "ln", "bn"),  # K = 3, the default
    ("ln", "bn"),  # K = 2 without IN: its statistics still feed the descriptors
    ("in", "ln", "bn", "gn"),  # K = 4
    ("bn", "gn"),  # K = 2, GN, no IN
]


def _grads(layer, forward, x, g):
    x = x.clone().requires_grad_()
    layer.zero_grad(set_to_none=True)
    y = forward(x)
    y.backward(g)
    params = {n: p.grad for n, p in layer.named_parameters()}
    return y, x.grad, params, layer.last_ratios


@pytest.mark.parametrize("normalizers", NORMALIZER_SETS, ids="-".join)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("variant", ["learned", "fixed", "per-sample", "no-affine"])
def test_hand_written_backward_equals_autograd_of_the_formula(
    normalizers, train, variant, implementation
):
    """Output, ratios, input gradient and every parameter gradient (the ratio sub-network's
    included) of the fast layer equal autograd through ``reference_forward``."""
    x, g = _x(), torch.randn(6, 8, 5, 7, generator=torch.Generator().manual_seed(9))
    layer = _layer(normalizers=normalizers, gn_groups=4, affine=variant != "no-affine")
    if "bn" in normalizers:
        layer(x * 1.3 + 0.2)  # non-trivial running statistics for eval mode
    if variant == "fixed":
        layer.fix_ratios(
            torch.linspace(1, 2, len(normalizers)) / torch.linspace(1, 2, len(normalizers)).sum()
        )
    if variant == "per-sample":  # (N, K): one mixture per sample, as the ablations give
        logits = torch.randn(len(x), len(normalizers), generator=torch.Generator().manual_seed(3))
        layer.fix_ratios(logits.softmax(1))
    layer.train(train)
    reference = copy.deepcopy(layer)
    y, gx, params, lam = _grads(layer, layer, x, g)
    y_ref, gx_ref, params_ref, lam_ref = _grads(reference, reference.reference_forward, x, g)
    assert _made_by(y) == implementation
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(lam, lam_ref, **TOL)
    torch.testing.assert_close(gx, gx_ref, atol=1e-4, rtol=1e-3)
    assert params.keys() == params_ref.keys()
    for name, grad in params.items():
        if params_ref[name] is None:
            assert grad is None or not grad.abs().any(), name
            continue
        # the shared logit bias has a zero gradient (softmax ignores a shift): compare noise
        atol = 1e-3 if name == "ratio_fc2.bias" else 1e-4
        torch.testing.assert_close(grad, params_ref[name], atol=atol, rtol=1e-3, msg=name)
    if "bn" in normalizers:
        torch.testing.assert_close(layer.running_mean, reference.running_mean, **TOL)
        torch.testing.assert_close(layer.running_var, reference.running_var, **TOL)
        assert layer.num_batches_tracked == reference.num_batches_tracked


def _naive_ratios(layer: ExemplarNorm2d, x: torch.Tensor) -> torch.Tensor:
    """The ratios written from the paper's definitions, sample by sample, in float64, without
    any of the layer's code: each normalizer's mean and variance from the values it pools over,
    descriptors (pooled normalized response, log spread ratio), the two FCs as matrix products,
    softmax over the normalizers."""
    x = x.double()
    n, c = x.shape[:2]
    w1, b1 = layer.ratio_fc1.weight.double(), layer.ratio_fc1.bias.double()
    w2, b2 = layer.ratio_fc2.weight.double()[0], layer.ratio_fc2.bias.double()[0]
    eps, groups = layer.eps, layer.gn_groups
    out = torch.empty(n, len(layer.normalizers), dtype=torch.float64)

    def mean_var(values):
        mu = values.sum() / values.numel()
        return mu, ((values - mu) ** 2).sum() / values.numel()

    for i in range(n):
        stats = {"in": [mean_var(x[i, ch]) for ch in range(c)]}
        stats["ln"] = [mean_var(x[i])] * c
        stats["bn"] = [mean_var(x[:, ch]) for ch in range(c)]
        size = c // groups
        stats["gn"] = [
            mean_var(x[i, (ch // size) * size : (ch // size + 1) * size]) for ch in range(c)
        ]
        logits = []
        for k, name in enumerate(layer.normalizers):
            offset = [
                (stats["in"][ch][0] - stats[name][ch][0]) / (stats[name][ch][1] + eps) ** 0.5
                for ch in range(c)
            ]
            spread = [
                0.5 * torch.log((stats["in"][ch][1] + eps) / (stats[name][ch][1] + eps))
                for ch in range(c)
            ]
            d = torch.stack(offset + spread)
            hidden = torch.clamp(w1 @ d + b1, min=0)
            logits.append(w2 @ hidden + b2 + layer.ratio_bias.double()[k])
        out[i] = torch.softmax(torch.stack(logits), 0)
    return out


@pytest.mark.parametrize("normalizers", NORMALIZER_SETS, ids="-".join)
def test_ratios_equal_a_naive_implementation_of_the_descriptors(normalizers, implementation):
    layer = _layer(normalizers=normalizers, gn_groups=4)
    x = _x()
    with torch.no_grad():
        layer(x)
    torch.testing.assert_close(
        layer.last_ratios.double(), _naive_ratios(layer, x), atol=1e-5, rtol=1e-4
    )


@pytest.mark.parametrize(
    "normalizers, affine", [(("in", "ln", "bn"), True), (("ln", "bn", "gn"), False)]
)
def test_gradcheck_in_double_precision(normalizers, affine, implementation):
    layer = _layer(c=4, normalizers=normalizers, gn_groups=2, affine=affine).double()
    x = _x(n=3, c=4, h=3, w=2).double().requires_grad_()
    params = [p for p in layer.parameters()]

    def f(t, *_):  # the parameters are inputs too: their gradients are checked as well
        return layer(t)

    assert _made_by(f(x)) == implementation

    assert torch.autograd.gradcheck(f, (x, *params), atol=1e-6)


def test_extra_repr_and_reset_running_stats():
    layer = ExemplarNorm2d(8, normalizers=("in", "bn"))
    assert layer.extra_repr() == (
        "8, normalizers=('in', 'bn'), eps=1e-05, momentum=0.1, affine=True, hidden=8, "
        "sync_bn_stats=False"
    )
    layer(_x())
    assert layer.num_batches_tracked == 1 and not torch.equal(layer.running_mean, torch.zeros(8))
    layer.reset_running_stats()
    assert torch.equal(layer.running_mean, torch.zeros(8))
    assert torch.equal(layer.running_var, torch.ones(8)) and layer.num_batches_tracked == 0


def test_eval_ratios_and_output_do_not_depend_on_the_batch(implementation):
    layer = _layer()
    layer(_x(n=16, seed=3))  # running statistics
    layer.eval()
    big = _x(n=64, seed=4)
    with torch.no_grad():
        y_all = layer(big)
        lam_all = layer.last_ratios
        for i in (0, 17, 63):
            y_one = layer(big[i : i + 1])
            torch.testing.assert_close(layer.last_ratios, lam_all[i : i + 1])
            torch.testing.assert_close(y_one, y_all[i : i + 1], **TOL)


def test_training_ratios_do_depend_on_the_batch():
    layer = _layer()
    big = _x(n=8, seed=4)
    layer(big)
    lam_all = layer.last_ratios
    layer(big[:2] * 5)
    assert not torch.allclose(layer.last_ratios[0], lam_all[0])


def test_moments_match_torch():
    x = _x()
    m, ex2 = _moments(x)
    torch.testing.assert_close(m, x.mean((2, 3)))
    torch.testing.assert_close(ex2 - m**2, x.var((2, 3), unbiased=False), **TOL)


def test_bad_arguments_are_clear():
    with pytest.raises(UserError, match="normalizers"):
        ExemplarNorm2d(4, normalizers=("in", "xn"))
    with pytest.raises(UserError, match="expects"):
        ExemplarNorm2d(4)(torch.randn(2, 3, 4, 4))
    with pytest.raises(UserError, match="ratios"):
        ExemplarNorm2d(4).fix_ratios([0.5, 0.6, 0])
    per_sample = ExemplarNorm2d(4)
    per_sample.fix_ratios(torch.full((3, 3), 1 / 3))
    with pytest.raises(UserError, match="3 fixed per-sample ratios for a batch of 2"):
        per_sample(torch.randn(2, 4, 3, 3))
    with pytest.raises(TypeError):  # arguments after num_features are keyword-only
        ExemplarNorm2d(4, ("in", "bn"))


def test_bf16_autocast_keeps_statistics_in_float32():
    layer = _layer()
    x, g = _x(), torch.randn(6, 8, 5, 7)
    reference = copy.deepcopy(layer)
    y_ref, gx_ref, params_ref, _ = _grads(reference, reference.reference_forward, x, g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        xb = x.bfloat16().requires_grad_()
        y = layer(xb)
    y.backward(g.bfloat16())
    assert y.dtype == torch.bfloat16 and xb.grad.dtype == torch.bfloat16
    assert layer.last_ratios.dtype == torch.float32
    assert all(p.grad.dtype == torch.float32 for p in layer.parameters())
    torch.testing.assert_close(y.float(), y_ref, atol=0.1, rtol=0.02)
    torch.testing.assert_close(xb.grad.float(), gx_ref, atol=0.1, rtol=0.05)
    torch.testing.assert_close(layer.weight.grad, params_ref["weight"], atol=0.5, rtol=0.05)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_compiled_layers_equal_the_formula(train):
    """``compile_layers``: the same layer compiled (one graph per configuration each way,
    dynamic shapes: two channel counts and sizes on one compilation), equals autograd through
    ``reference_forward``; the eval-mode statistics path (``coefficients``) too."""
    from en_analysis.nn import exemplar_norm as E

    E.compile_layers(True)
    cpu_kernel.use(False)  # the kernel takes precedence on CPU
    try:
        for c, h in ((8, 5), (16, 4)):
            x = torch.randn(6, c, h, 7, generator=torch.Generator().manual_seed(c))
            g = torch.randn(6, c, h, 7, generator=torch.Generator().manual_seed(9))
            layer = _layer(c=c).train(train)
            reference = copy.deepcopy(layer)
            y, gx, params, lam = _grads(layer, layer, x, g)
            y_ref, gx_ref, params_ref, lam_ref = _grads(
                reference, reference.reference_forward, x, g
            )
            torch.testing.assert_close(y, y_ref, **TOL)
            torch.testing.assert_close(lam, lam_ref, **TOL)
            torch.testing.assert_close(gx, gx_ref, atol=1e-4, rtol=1e-3)
            for name in ("weight", "ratio_fc1.weight", "ratio_fc2.weight", "ratio_bias"):
                torch.testing.assert_close(params[name], params_ref[name], atol=1e-4, rtol=1e-3)
            with torch.no_grad():  # the statistics-only path (evaluation, extraction)
                torch.testing.assert_close(layer(x), reference.reference_forward(x), **TOL)
        assert {E._layer_forward, E._layer_backward, E._graph_forward} <= set(E._COMPILED)
    finally:
        E.compile_layers(False)
        cpu_kernel.use(True)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_every_code_path_is_named_and_agrees(train, monkeypatch):
    """``code_path`` names the path a call takes (``exemplar_norm.PATHS``), and the kernel, the
    Python implementation and its no-gradient path give the same output, ratios and running
    statistics as ``reference_forward``. The paths that need other conditions are named here;
    their maths is checked by test_compiled_layers_equal_the_formula (compiled) and
    tests/test_sync_bn.py (synced)."""
    from en_analysis.nn import exemplar_norm as E

    x = _x()
    base = _layer()
    base(x * 1.3 + 0.2)  # non-trivial running statistics for eval mode
    base.train(train)
    reference = copy.deepcopy(base)
    with torch.no_grad():
        y_ref = reference.reference_forward(x)
    for path in ("kernel", "python", "python-no-grad"):
        layer = copy.deepcopy(base)
        cpu_kernel.use(path == "kernel")
        try:
            grad = path != "python-no-grad"
            xs = x.clone().requires_grad_(grad)
            with torch.set_grad_enabled(grad):
                assert layer.code_path(xs) == path
                y = layer(xs)
        finally:
            cpu_kernel.use(True)
        torch.testing.assert_close(y.detach(), y_ref, **TOL, msg=path)
        torch.testing.assert_close(layer.last_ratios, reference.last_ratios, **TOL, msg=path)
        torch.testing.assert_close(layer.running_var, reference.running_var, **TOL, msg=path)
    layer = copy.deepcopy(base)
    cpu_kernel.use(False)
    E.compile_layers(True)
    try:
        assert layer.code_path(x) == "compiled"
    finally:
        E.compile_layers(False)
        cpu_kernel.use(True)
    with monkeypatch.context() as m:
        m.setattr(layer, "_synced", lambda: True)
        assert layer.code_path(x) == "synced"
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert layer.code_path(x) == "traced"
    assert set(E.PATHS) == {"kernel", "python", "python-no-grad", "compiled", "synced", "traced"}


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_channels_last_equals_contiguous(train, implementation):
    """A channels_last input (``train.channels_last``) gives the same output, ratios, gradients
    and running statistics as a contiguous one, and keeps its layout."""
    x, g = _x(c=16), torch.randn(6, 16, 5, 7, generator=torch.Generator().manual_seed(9))
    layer = _layer(c=16).train(train)
    last = copy.deepcopy(layer)
    y, gx, params, lam = _grads(layer, layer, x, g)
    nhwc = torch.channels_last
    y_l, gx_l, params_l, lam_l = _grads(
        last, last, x.to(memory_format=nhwc), g.to(memory_format=nhwc)
    )
    assert _made_by(y_l) == implementation
    assert y_l.is_contiguous(memory_format=nhwc) and gx_l.is_contiguous(memory_format=nhwc)
    torch.testing.assert_close(y_l, y, **TOL)
    torch.testing.assert_close(lam_l, lam, **TOL)
    torch.testing.assert_close(gx_l, gx, **TOL)
    for name, grad in params.items():
        torch.testing.assert_close(params_l[name], grad, atol=1e-4, rtol=1e-3, msg=name)
    torch.testing.assert_close(last.running_var, layer.running_var, **TOL)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_the_kernel_split_across_threads_equals_the_formula(layout, train):
    """A batch large enough that the kernel's loops split over 2 threads (per sample, per
    (sample, channel), per block of 16 channels plus a tail of 8): the same numbers as autograd
    through ``reference_forward``, in float64 so that a misplaced value cannot hide in float32's
    rounding over 64 samples."""
    n, c = 64, 72
    x = _x(n=n, c=c, h=5, w=6).double()
    g = torch.randn(n, c, 5, 6, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    if layout == "channels_last":
        x, g = x.to(memory_format=torch.channels_last), g.to(memory_format=torch.channels_last)
    layer = _layer(c=c).double()
    layer(x * 1.3 + 0.2)  # non-trivial running statistics for eval mode
    layer.train(train)
    reference = copy.deepcopy(layer)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        y, gx, params, lam = _grads(layer, layer, x, g)
    finally:
        torch.set_num_threads(threads)
    y_ref, gx_ref, params_ref, lam_ref = _grads(reference, reference.reference_forward, x, g)
    assert _made_by(y) == "kernel"
    # float64's default tolerances (1e-7): two code paths sum in different orders; a value in
    # the wrong place would be off by O(1)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(lam, lam_ref)
    torch.testing.assert_close(gx, gx_ref)
    for name, grad in params.items():
        torch.testing.assert_close(grad, params_ref[name], msg=name)
    torch.testing.assert_close(layer.running_var, reference.running_var)


def test_the_kernel_build_follows_atens_instruction_set():
    """AVX2 loops only where ATen runs AVX2 itself, and the build's name says which (a cached
    AVX2 build never loads where ``ATEN_CPU_CAPABILITY=default``)."""
    code = "from en_analysis.nn import cpu_kernel; print(cpu_kernel.build_options())"
    options = {}
    for capability in ("default", "avx2"):
        env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        options[capability] = eval(out.stdout)
    assert "-mavx2" not in options["default"]["extra_cflags"]
    assert not options["default"]["name"].endswith("_avx2")
    assert "-fopenmp" in options["default"]["extra_cflags"]
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):  # this CPU has AVX2
        assert "-mavx2" in options["avx2"]["extra_cflags"]
        assert options["avx2"]["name"] == options["default"]["name"] + "_avx2"


def _first_layer_call(env: dict, before: str = "") -> list[str]:
    """In a new process (``before`` run first): the grad_fn of two EN layer calls, the
    warnings they gave, and ``cpu_kernel.available()``."""
    code = before + (
        "import warnings, torch\n"
        "from en_analysis.nn import ExemplarNorm2d, cpu_kernel\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    layer = ExemplarNorm2d(8)\n"
        "    for _ in range(2):\n"
        "        y = layer(torch.randn(2, 8, 3, 3, requires_grad=True))\n"
        "print(y.grad_fn.name())\n"
        "print(len(caught), *(w.message for w in caught))\n"
        "print(cpu_kernel.available())\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()


@pytest.mark.parametrize("missing", ["compiler that fails", "g++ and ninja"])
def test_without_a_compiler_the_python_layer_runs_with_one_warning(tmp_path, missing):
    """A compiler that always fails (an empty build cache), or no compiler and no ninja on the
    PATH: one warning that names the reason, then the Python layer. Only tools that are
    really missing are named (before: "Install g++ and ninja" whatever the reason)."""
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    if missing == "g++ and ninja":
        (tmp_path / "bin").mkdir()
        env["PATH"] = str(tmp_path / "bin")
    else:
        env["CXX"] = "false"
    out = _first_layer_call(env)
    assert out[0] == "_ExemplarNormFunctionBackward"
    assert out[1].startswith("1 the EN layer's C++ kernel could not be built or loaded (")
    if missing == "g++ and ninja":
        assert "Ninja is required" in out[1]
        assert "Install g++ and ninja-build (Debian: apt-get install g++ ninja-build)" in out[1]
    else:
        assert "'false'" in out[1] and "Install" not in out[1]


# cpp_extension.load as a cached library that loads but does not define the operator, and
# (``fresh_build_works``) a build in another folder that does (a stand-in operator)
_BROKEN_CACHE = """
from pathlib import Path
import torch
from torch.utils import cpp_extension
calls, keep = [], []
def load(**kwargs):
    calls.append(kwargs["build_directory"])
    if kwargs["build_directory"] and fresh_build_works:
        (Path(kwargs["build_directory"]) / "built-fresh").write_text("")
        keep.append(torch.library.Library("en_layer", "DEF"))
        keep[-1].define("exemplar_norm(Tensor x) -> Tensor")
    return str(Path(kwargs["build_directory"] or "cache") / "en_layer.so")
cpp_extension.load = load
"""


def test_a_cached_kernel_without_its_operator_is_built_again_once(tmp_path):
    """Before: a cached library that loaded but lacked the operator crashed training at the
    first EN layer. Now it is built once more in a fresh folder; failing that, one warning
    with the reason, and the Python layer runs."""
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    before = "fresh_build_works = False\n" + _BROKEN_CACHE
    out = _first_layer_call(env, before + "import atexit; atexit.register(print, calls)\n")
    assert out[0] == "_ExemplarNormFunctionBackward"
    assert out[1].startswith("1 the EN layer's C++ kernel could not be built or loaded (")
    assert "en_layer.so does not define en_layer::exemplar_norm" in out[1]
    assert "Install" not in out[1] and out[2] == "False"
    cache = cpu_kernel.build_options()["name"]
    loads = eval(out[3])
    assert loads[0] is None and loads[1].startswith(str(tmp_path / f"{cache}-"))
    assert [p.name for p in tmp_path.iterdir()] == [cache]  # the fresh folder is removed


def test_a_fresh_build_replaces_the_broken_cache(tmp_path):
    code = (
        "fresh_build_works = True\n" + _BROKEN_CACHE + "from en_analysis.nn import cpu_kernel\n"
        "print(cpu_kernel.available())\n"
    )
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout == "True\n" and "warn" not in out.stderr.lower()
    cache = tmp_path / cpu_kernel.build_options()["name"]
    assert [p.name for p in tmp_path.iterdir()] == [cache.name]  # later processes load it
    assert (cache / "built-fresh").exists()
