"""Where models train and run: the recipe's ``runtime`` section resolved once into a ``Runtime``.

This is the only module that asks torch whether CUDA exists. Everything that trains or scores a model takes
the ``Runtime`` it is handed (``Runtime.cpu()`` where none is), so CPU and CUDA go through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")  # "cuda:N" names one GPU


def check_device(spec: str) -> None:
    """A device spec's form (not whether that device exists): auto | cpu | cuda | cuda:N."""
    head, sep, index = str(spec).partition(":")
    if head not in DEVICES or (sep and (head != "cuda" or not index.isdigit())):
        raise ConfigError(f"runtime device must be auto, cpu, cuda or cuda:N, got {spec!r:.60}")


def cuda_available() -> bool:
    """Whether torch sees a usable CUDA device (False without torch's CUDA build or a driver)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # a broken CUDA install is no CUDA
        return False


@dataclass(frozen=True)
class Runtime:
    """A resolved device: ``device`` is "cpu" or "cuda:N"; ``amp`` turns bf16 autocast on (CUDA only)."""

    device: str = "cpu"
    amp: bool = False

    @staticmethod
    def cpu() -> Runtime:
        return Runtime("cpu", False)

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def torch_device(self):
        import torch

        return torch.device(self.device)

    def autocast(self):
        """bf16 autocast where ``amp`` is on and the device is a GPU; a no-op context elsewhere."""
        import contextlib

        import torch

        if self.amp and self.is_cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def gpu_name(self) -> str | None:
        if not self.is_cuda:
            return None
        import torch

        return torch.cuda.get_device_name(self.torch_device())

    def describe(self) -> dict:
        """What the manifest records: the device, the GPU's name and how its numerics relate to the CPU's."""
        out: dict = {"device": self.device, "amp": self.amp, "gpu": self.gpu_name()}
        if self.is_cuda:
            out["numerics"] = ("GPU kernels (cuDNN / cuBLAS, TF32 off" + (", bf16 autocast" if self.amp else "")
                               + "): weights and figures differ from a CPU run of the same recipe and seed")
        else:
            out["numerics"] = "CPU"
        return out


def resolve(device: str = "auto", amp: bool = False) -> Runtime:
    """``auto`` is the first GPU where CUDA exists, else the CPU; ``cuda`` / ``cuda:N`` where there is no such
    GPU is a ConfigError (the CLI's one line, exit 2) before any work."""
    check_device(device)
    if device == "cpu":
        return Runtime("cpu", amp)
    have = cuda_available()
    if device == "auto":
        return Runtime("cuda:0", amp) if have else Runtime("cpu", amp)
    if not have:
        raise ConfigError(f"--device {device}: no CUDA device here (torch {_torch_version()} "
                          f"sees none); use --device cpu or auto")
    import torch

    index = int(device.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"--device {device}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    torch.backends.cuda.matmul.allow_tf32 = False  # figures close to the CPU's; amp is the opt-in for speed
    torch.backends.cudnn.allow_tf32 = False
    return Runtime(f"cuda:{index}", amp)


def _torch_version() -> str:
    try:
        import torch

        return torch.__version__
    except Exception:
        return "?"
