"""``make run``'s token step decides by ``blockchain-provider``'s exit code and JSON: a refusal gets
a fresh token (or a new agent), any other failure stops the stack and replaces nothing."""

from __future__ import annotations

import io
from typing import Any

import pytest

from blockchain_provider import cli
from scripts.stack import StackError
from scripts.stack.orchestration import Stack
from scripts.stack.settings import Settings

STORED = "02" + "ab" * 32
NEW = "03" + "cd" * 32


class ScriptedStack(Stack):
    """A stack whose ``blockchain-provider`` runs answer from a script, in order."""

    def __init__(self, tmp_path, answers: list[tuple[int, dict[str, Any]]]) -> None:
        super().__init__(Settings(root=tmp_path, stack_dir=tmp_path), out=io.StringIO())
        self.answers = answers
        self.commands: list[tuple[str, ...]] = []
        self.public_key = STORED

    def provider(self, *args: str) -> tuple[int, dict[str, Any]]:
        self.commands.append(args[:2])
        return self.answers.pop(0)


def test_an_accepted_token_is_kept(tmp_path):
    stack = ScriptedStack(tmp_path, [(cli.EXIT_OK, {"ok": True})])
    stack._check_token()
    assert stack.commands == [("token", "check")] and stack.public_key == STORED


def test_a_refused_token_is_rotated(tmp_path):
    stack = ScriptedStack(tmp_path, [(cli.EXIT_REFUSED, {}), (cli.EXIT_OK, {"public_key": STORED})])
    stack._check_token()
    assert stack.commands == [("token", "check"), ("token", "rotate")] and stack.public_key == STORED


def test_an_agent_the_gateway_does_not_know_is_replaced(tmp_path):
    stack = ScriptedStack(
        tmp_path,
        [(cli.EXIT_REFUSED, {}), (cli.EXIT_REFUSED, {}), (cli.EXIT_OK, {"ok": True, "public_key": NEW})],
    )
    stack._check_token()
    assert stack.commands == [("token", "check"), ("token", "rotate"), ("token", "create")]
    assert stack.public_key == NEW


@pytest.mark.parametrize("code", [cli.EXIT_NO_ANSWER, cli.EXIT_BROKER, cli.EXIT_CONFIG, -9])
def test_a_check_that_fails_without_a_refusal_replaces_nothing(tmp_path, code):
    stack = ScriptedStack(tmp_path, [(code, {})])
    with pytest.raises(StackError, match="token check` failed"):
        stack._check_token()
    assert stack.commands == [("token", "check")] and stack.public_key == STORED


def test_a_rotation_that_gets_no_answer_creates_no_agent(tmp_path):
    stack = ScriptedStack(tmp_path, [(cli.EXIT_REFUSED, {}), (cli.EXIT_NO_ANSWER, {})])
    with pytest.raises(StackError, match=r"token rotate` failed \(exit 4: no_answer\)"):
        stack._check_token()
    assert stack.commands == [("token", "check"), ("token", "rotate")]


def test_a_new_agent_is_named_by_the_json(tmp_path):
    stack = ScriptedStack(tmp_path, [(cli.EXIT_OK, {"ok": True, "public_key": NEW})])
    assert stack._create_agent() == NEW
    failed = ScriptedStack(tmp_path, [(cli.EXIT_REFUSED, {"ok": False, "error": "refused"})])
    with pytest.raises(StackError, match=r"token create` failed \(exit 3: refused\)"):
        failed._create_agent()
