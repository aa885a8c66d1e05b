"""Where models train and run: the recipe's ``runtime`` section resolved once into a ``Runtime``.

This is the only module that asks torch whether CUDA exists. Everything that trains or scores a model takes
the ``Runtime`` it is handed (``Runtime.cpu()`` where none is), so CPU and CUDA go through the same code.
"""

from __future__ import annotations

import contextlib
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


_task_gpu: dict = {"device": None}  # set inside an executor task that was given one GPU


@contextlib.contextmanager
def task_gpu():
    """Inside a Ray task: the GPU Ray reserved for it (Ray makes it the only visible one, ``cuda:0``) is where
    every ``auto`` / ``cuda`` / ``cuda:N`` runtime of the task resolves, so the reserved GPU does the work
    (the driver's ``cuda:N`` names a GPU of another machine's numbering). A task without a GPU: unchanged."""
    try:
        import ray

        gpus = ray.get_gpu_ids() if ray.is_initialized() else []
    except Exception:  # not in a Ray worker
        gpus = []
    before = _task_gpu["device"]
    _task_gpu["device"] = "cuda:0" if gpus and cuda_available() else None
    try:
        yield _task_gpu["device"]
    finally:
        _task_gpu["device"] = before


def resolve(device: str = "auto", amp: bool = False) -> Runtime:
    """``auto`` is the first GPU where CUDA exists, else the CPU; ``cuda`` / ``cuda:N`` where there is no such
    GPU is a ConfigError (the CLI's one line, exit 2) before any work."""
    check_device(device)
    if device == "cpu":
        return Runtime("cpu", amp)
    if _task_gpu["device"] is not None:  # an executor task's reserved GPU
        device = _task_gpu["device"]
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


def of_recipe(recipe) -> Runtime:
    """The runtime a recipe (a Recipe or its dict) asks for, resolved here."""
    rt = (recipe.get("runtime") or {}) if isinstance(recipe, dict) else vars(recipe.runtime)
    return resolve(rt.get("device", "auto"), bool(rt.get("amp", False)))


def gpu_count() -> int:
    """CUDA devices torch sees (0 without CUDA)."""
    if not cuda_available():
        return 0
    import torch

    return int(torch.cuda.device_count())


def gpu_names() -> list[str]:
    """The name of every CUDA device torch sees (for machine descriptions)."""
    if not cuda_available():
        return []
    import torch

    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def _torch_version() -> str:
    try:
        import torch

        return torch.__version__
    except Exception:
        return "?"
