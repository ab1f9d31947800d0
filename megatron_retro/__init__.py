"""megatron_retro: parameter-efficient fine-tuning of GPT and RETRO with retrieval on megatron-core.

The user's entry point is the command line, ``megatron-retro <command>`` (``cli.main``); the
library is layered, each package importing only the ones below it (``tests/unit/import_rules.py``):

    cli -> *commands -> training / evaluation / planning -> peft / retrieval -> models / data
        -> parallel / config (with errors, quiet, io_atomic and the kernels)

Public API: ``config`` (``load_config``, ``RunConfig`` and its sections), ``errors.UserError`` (one
line for bad input), ``io_atomic`` (``write_text_atomic``, ``save_figure_atomic``), and each
package's own list in its ``__init__`` docstring.
"""

__version__ = "0.1.0"
