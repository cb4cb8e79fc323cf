from . import config_reference_markdown

print(config_reference_markdown(), end="")
