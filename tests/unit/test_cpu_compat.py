"""The CPU compatibility layer redirects megatron-core's CUDA calls, and only while applied."""
import pytest
import torch

from megatron_retro.parallel import cpu_compat

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the layer is for CPU-only torch builds")


@pytest.fixture
def applied():
    was = cpu_compat.is_applied()
    cpu_compat.apply()
    yield
    if not was:
        cpu_compat.remove()


def test_device_requests_for_cuda_land_on_cpu(applied):
    assert torch.cuda.current_device() == torch.device("cpu")
    assert torch.zeros(3, device="cuda").device.type == "cpu"
    assert torch.empty(2, device=torch.device("cuda", 0)).device.type == "cpu"
    t = torch.ones(2)
    assert t.cuda() is t
    assert t.to("cuda").device.type == "cpu"
    assert t.to("cuda", torch.float64).dtype == torch.float64
    assert t.to(device="cuda:0").device.type == "cpu"


def test_tensor_type_reports_the_cuda_name_megatron_asserts_on(applied):
    assert torch.ones(1).type() == "torch.cuda.FloatTensor"
    assert torch.ones(1, dtype=torch.bfloat16).type() == "torch.cuda.BFloat16Tensor"
    assert torch.ones(1).type(torch.float64).dtype == torch.float64


def test_cuda_rng_is_the_cpu_generator_and_megatron_tracker_forks_it(applied):
    from megatron.core.tensor_parallel.random import CudaRNGStatesTracker

    torch.cuda.manual_seed(5)
    a = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(a, torch.rand(3))
    tracker = CudaRNGStatesTracker()
    tracker.add("stream", 77)
    torch.manual_seed(1)
    before = torch.get_rng_state()
    with tracker.fork("stream"):
        forked = torch.rand(4)
    assert torch.equal(torch.get_rng_state(), before)  # the default stream is untouched
    torch.manual_seed(77)
    assert torch.equal(forked, torch.rand(4))


def test_sync_stream_event_are_noops(applied):
    torch.cuda.synchronize()
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    with torch.cuda.stream(torch.cuda.Stream()):
        torch.cuda.current_stream().wait_stream(torch.cuda.default_stream())
    assert event.elapsed_time(event) == 0.0


def test_remove_restores_torch():
    was = cpu_compat.is_applied()
    cpu_compat.apply()
    cpu_compat.remove()
    try:
        with pytest.raises((RuntimeError, AssertionError)):
            torch.zeros(1, device="cuda")
        assert torch.ones(1).type() == "torch.FloatTensor"
    finally:
        if was:
            cpu_compat.apply()


def test_apply_if_needed_applies_without_cuda():
    assert cpu_compat.apply_if_needed() is True
    assert cpu_compat.is_applied()


class _CountingRedirect(cpu_compat.CudaToCpuMode):
    """A redirect mode that counts the torch calls it sees."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return super().__torch_function__(func, types, args, kwargs)


class _Sub(torch.Tensor):
    pass


class _UserMode(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _lora_step(x, w, a, b):
    from megatron_retro.kernels.lora_torch import LoRAFoldedLinearFunction

    y = LoRAFoldedLinearFunction.apply(x, w, a, b, None, 2.0)
    y.square().sum().backward()
    return y.detach().clone(), x.grad.clone(), a.grad.clone(), b.grad.clone()


def test_outside_redirect_skips_the_mode_in_our_functions_with_the_same_results(applied):
    g = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(7, 5, generator=g), requires_grad=False)
    a, b = (torch.nn.Parameter(torch.randn(*s, generator=g)) for s in ((3, 5), (7, 3)))
    results = {}
    for skip in (True, False):
        x = torch.randn(9, 5, generator=torch.Generator().manual_seed(1)).requires_grad_()
        a.grad = b.grad = None
        cpu_compat.SKIP_REDIRECT_IN_HOT_PATHS = skip
        try:
            with _CountingRedirect() as mode:
                results[skip] = _lora_step(x, w, a, b)
        finally:
            cpu_compat.SKIP_REDIRECT_IN_HOT_PATHS = True
        results[skip, "calls"] = mode.calls
    # the same tensors either way; without the skip every op inside forward/backward went through the mode
    assert all(torch.equal(p, q) for p, q in zip(results[True], results[False]))
    assert results[False, "calls"] >= results[True, "calls"] + 6


def test_outside_redirect_keeps_dispatch_for_a_users_mode_or_a_subclass(applied):
    seen = []
    body = cpu_compat.outside_redirect(lambda t: seen.append(torch._C._is_torch_function_enabled()))
    body(torch.ones(1))                      # only the redirect: dispatch off inside
    with _UserMode():
        body(torch.ones(1))                  # a user's mode must still see the calls
    body(torch.ones(1).as_subclass(_Sub))   # a subclass may rely on its own __torch_function__
    assert seen == [False, True, True]
