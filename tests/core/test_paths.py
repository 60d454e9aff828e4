"""Where things go: a model name becomes exactly one folder under artifacts/checkpoints/ (or inspect/)."""

from __future__ import annotations

import pytest

from hellogpt.core.errors import UserError
from hellogpt.core.paths import Home, check_model_name
from hellogpt.core.settings import Config

BAD = ["../x", "/tmp/x", "a/b", "..", ".", ".hidden", "-dash", "x" * 101, "a b", "a\\b", "", "naïve", "x\n"]
GOOD = ["hellogpt", "my-model", "austen_2", "v1.2", "_", "x" * 100]


@pytest.mark.parametrize("name", GOOD)
def test_good_names_pass(tmp_path, name):
    assert check_model_name(name) == name
    assert Home(tmp_path).model_dir(name) == tmp_path / "artifacts" / "checkpoints" / name
    assert Home(tmp_path).inspect_dir(name) == tmp_path / "artifacts" / "inspect" / name


@pytest.mark.parametrize("name", BAD)
def test_bad_names_are_refused_where_a_path_is_made(tmp_path, name):
    for make_path in (Home(tmp_path).model_dir, Home(tmp_path).inspect_dir, check_model_name,
                      lambda n: Config(model_name=n)):
        with pytest.raises(UserError, match="cannot be a model name: it becomes one folder") as e:
            make_path(name)
        assert "\n" not in str(e.value).replace(repr(name), "")  # one paragraph
    assert list(tmp_path.iterdir()) == []
