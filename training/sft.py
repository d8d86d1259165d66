"""Supervised fine-tuning of a LoRA adapter on the final answers users kept (the `sft` split of a build).

    python -m training.sft --config recipes/tiny/sft.yaml [--key value ...]
    accelerate launch --config_file recipes/accelerate_configs/single_gpu.yaml -m training.sft --config RECIPE

Recipe keys: `FlywheelArguments` (data, ...), TRL's `SFTConfig` and `ModelConfig`; see docs/training.md.
"""

import sys

from training.run import main_for_stage

if __name__ == "__main__":
    sys.exit(main_for_stage("sft"))
