"""dev/lineage.py: which committed stages' locks lag the code and params (crafted ``dvc status``)."""

from __future__ import annotations

from tests.conftest import REPO, dev_tool


def _tool():
    return dev_tool("lineage")


def test_the_check_sees_changed_code_params_and_commands_not_data() -> None:
    status = {
        "train": [{"changed deps": {"src/ontime/cli.py": "modified", "data/split": "deleted"}}],
        "select": [{"changed deps": {"params.yaml": {"select.folds": "modified"}}}],
        "fold@3": ["changed command"],
        "report": [{"changed deps": {"data/predictions/test.parquet": "deleted", "data/folds": "modified"}},
                   {"changed outs": {"reports/evidently": "not in cache"}}],
    }  # fmt: skip
    assert _tool().stale(status, {"src/ontime/cli.py"}) == {
        "train": ["src/ontime/cli.py modified"],
        "select": ["params.yaml:select.folds modified"],
        "fold@3": ["changed command"],
    }


def test_the_tracked_files_are_gits() -> None:
    files = _tool().tracked(REPO)
    assert "src/ontime/cli.py" in files
    assert "data/split" not in files
