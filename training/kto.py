"""KTO of a LoRA adapter on single outputs users kept or rejected (the `kto` split of a build).

    python -m training.kto --config recipes/tiny/kto.yaml [--sft_adapter ADAPTER_DIR] [--key value ...]

The reference model is chosen as for DPO (base with the adapter disabled, or a frozen copy of the SFT adapter).
Recipe keys: `FlywheelArguments`, TRL's `KTOConfig` and `ModelConfig`; see docs/training.md.
"""

import sys

from training.run import main_for_stage

if __name__ == "__main__":
    sys.exit(main_for_stage("kto"))
