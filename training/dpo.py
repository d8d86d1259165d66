"""DPO of a LoRA adapter on the preference pairs users' edits and regenerations made (the `dpo` split of a build).

    python -m training.dpo --config recipes/tiny/dpo.yaml [--sft_adapter ADAPTER_DIR] [--key value ...]
    accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml -m training.dpo --config RECIPE

Without `sft_adapter` the reference model is the base with the new adapter disabled; with it, the SFT adapter keeps
training and a frozen copy of it is the reference. Recipe keys: `FlywheelArguments`, TRL's `DPOConfig` and
`ModelConfig`; see docs/training.md.
"""

import sys

from training.run import main_for_stage

if __name__ == "__main__":
    sys.exit(main_for_stage("dpo"))
