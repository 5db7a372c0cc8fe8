"""cuBLAS baseline through PyTorch for the cases of benches/vulkan_matmul.rs, timed with
CUDA events (median of 20), TF32 off for f32. Prints RESULT lines in the same format."""
import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def timed(fn, iters=20):
    for _ in range(3):
        fn()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) * 1e3)
    times.sort()
    return times[len(times) // 2]


print("device:", torch.cuda.get_device_name(), "torch", torch.__version__)
SIZES = (1024, 2048, 4096, 8192)
for s in SIZES:
    for dt, name in ((torch.float32, "f32"), (torch.float16, "f16")):
        a = torch.randn(s, s, device="cuda", dtype=dt)
        b = torch.randn(s, s, device="cuda", dtype=dt)
        us = timed(lambda: torch.matmul(a, b))
        print(f"RESULT case=torch_matmul_{name}_{s} us={us:.1f} tflops={2*s**3/us/1e6:.2f}")
for g in SIZES:
    x = torch.randn(1, g, device="cuda", dtype=torch.float16)
    w = torch.randn(g, g, device="cuda", dtype=torch.float16)
    for name, fn in (("nt", lambda: torch.nn.functional.linear(x, w)), ("nn", lambda: torch.matmul(x, w))):
        us = timed(fn)
        gbs = (g * g + 2 * g) * 2 / us / 1e3
        print(f"RESULT case=torch_gemv_f16_{g}_{name} us={us:.1f} gbs={gbs:.0f}")
    del x, w
