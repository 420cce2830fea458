"""The lean core never imports torch; a missing extra is named in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
from nncift.errors import InputError
from nncift.extras import EXTRA_OF, MissingExtraError, require

HEAVY = ("torch", "transformers", "sentence_transformers", "peft", "ray", "matplotlib")


@pytest.mark.parametrize("argv", [[], ["--help"], ["select", "--help"], ["estimate", "--help"]])
def test_import_and_help_never_import_torch(argv: list[str]) -> None:
    # The console script's entry point, run as `nncift ARGV`; the loaded top-level modules are
    # printed to stderr at exit (after click's SystemExit).
    code = (
        "import atexit, sys\n"
        "import nncift\n"
        "from nncift.cli import main\n"
        "atexit.register(lambda: print('LOADED', sorted({k.split('.')[0] for k in sys.modules}"
        f" & set({HEAVY!r})), file=sys.stderr))\n"
        f"sys.argv = ['nncift', *{argv!r}]\n"
        "main() if sys.argv[1:] else None\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stderr, out.stderr


def test_require_names_the_extra() -> None:
    with pytest.raises(MissingExtraError, match=r"pip install 'nncift\[lm\]'") as err:
        require("numpy", "no_such_module_xyz", purpose="the language model 'x'", extra="lm")
    assert isinstance(err.value, InputError)  # the CLI shows it as one line
    assert "no_such_module_xyz" in str(err.value) and "\n" not in str(err.value)
    require("numpy", purpose="nothing missing")  # no error when present


def test_every_extra_named_exists_in_pyproject() -> None:
    from pathlib import Path

    import tomllib

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    assert set(EXTRA_OF.values()) <= set(extras)
    assert "torch" not in " ".join(tomllib.loads(pyproject.read_text())["project"]["dependencies"])
