"""The training commands of the README, as the tests run them.

The tests do not keep their own copies: they parse the documented commands and run them with `--cpu`, a free port,
two processes and the tiny settings of `TINY` appended (argparse keeps the last value of a repeated option).
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import sys
from pathlib import Path

from hf_detr import presets

DOC = Path(__file__).parents[1] / "README.md"

# appended to every documented command: a tiny model and data set that train in seconds on a CPU (the `tiny` preset,
# smaller still; its labels come from the data)
TINY_MODEL = {
    **{key: value for key, value in presets.get("tiny").model.items() if key != "id2label"},
    "d_model": 32,
    "decoder_layers": 1,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "num_queries": 8,
}
TINY = [
    "--cpu",
    "--model_kwargs",
    json.dumps(TINY_MODEL),
    "--synthetic_image_size",
    "64",
    "--image_size",
    "64",
    "--per_device_train_batch_size",
    "2",
    "--per_device_eval_batch_size",
    "2",
    "--logging_steps",
    "1",
    "--disable_tqdm",
]


def documented_commands() -> list[list[str]]:
    """Every command of the ```bash blocks of the README, split as the shell would (variables left as is)."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    return [shlex.split(block.replace("\\\n", " ")) for block in blocks]


def command(kind: str) -> list[str]:
    """The documented command for `kind`: "single" (hf-detr train), "multi-gpu" or "multi-node" (accelerate launch)."""
    for argv in documented_commands():
        if kind == "single" and argv[:2] == ["hf-detr", "train"]:
            return argv
        if argv[:2] == ["accelerate", "launch"] and ("--num_machines" in argv) == (kind == "multi-node"):
            return argv
    raise AssertionError(f"the README has no {kind} training command")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_argv(
    documented: list[str],
    num_processes: int,
    port: int,
    replace: dict[str, str] | None = None,
    script: list[str] | None = None,
) -> list[str]:
    """A documented `accelerate launch ... -m hf_detr train ARGS` with this venv's accelerate, `num_processes` in all,
    `port`, `$VARIABLES` replaced from `replace`; `script` (e.g. a test wrapper) instead of `-m hf_detr train`."""
    argv = [replace.get(token, token) if replace else token for token in documented]
    module = argv.index("-m")
    assert argv[module + 1 : module + 3] == ["hf_detr", "train"], argv
    launcher, args = argv[2:module], argv[module + 3 :]
    launcher[launcher.index("--num_processes") + 1] = str(num_processes)
    if "--main_process_port" in launcher:
        launcher[launcher.index("--main_process_port") + 1] = str(port)
    else:
        launcher += ["--main_process_port", str(port)]
    accelerate = str(Path(sys.executable).parent / "accelerate")
    return [accelerate, "launch", *launcher, *(script or ["-m", "hf_detr", "train"]), *args]
