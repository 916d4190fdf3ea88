"""mmvla: multimodal vision-language-action learning for robot control."""

__version__ = "0.1.0"
