"""`make setup`'s last step: torch and torchvision import together and a torchvision operator runs.

A torchvision built for another torch (pip can pair them when the two come from different indexes or calls)
imports, or fails to, with "operator torchvision::nms does not exist"; this says so at setup, in one line
with the fix given as the first argument, instead of in the first test.
"""

import sys
from importlib.metadata import PackageNotFoundError, version


def installed(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "(not installed)"


def main() -> int:
    fix = sys.argv[1] if len(sys.argv) > 1 else "reinstall torch and torchvision in one pip call"
    try:
        import torch
        import torchvision
        from torchvision.ops import nms

        nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    except Exception as err:  # any failure here is the mismatch, or a broken install: report it, whatever it is
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        print(f"setup: error: torch {installed('torch')} and torchvision {installed('torchvision')} do not work "
              f"together ({reason}); fix: {fix}", file=sys.stderr)
        return 1
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
    print(f"setup: torch {torch.__version__} ({build} build) and torchvision {torchvision.__version__} work together")
    return 0


if __name__ == "__main__":
    sys.exit(main())
