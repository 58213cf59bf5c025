"""`python -m nanogptoss`: the presets, their parameter counts and FLOPs per token."""

from .params import preset_table

if __name__ == "__main__":
    print(preset_table())
