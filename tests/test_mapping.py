from __future__ import annotations

import ast
import copy
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import yaml

from proxy.mapping import MappingError, load_table
from proxy.sandbox.commands import COMMANDS

PROXY = Path(__file__).resolve().parents[1] / "proxy"
TABLE = yaml.safe_load((PROXY / "mapping.yaml").read_text())


def _broken(edit) -> dict:
    data = copy.deepcopy(TABLE)
    edit(data)
    return data


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["operations"]["sendMessage"]["request"]["source"].update(form="/x"),
     "operations.sendMessage.request.source: unknown key 'form'"),
    (lambda d: d["operations"]["getBalance"]["response"]["credits"].update(convert="money"),
     "operations.getBalance.response.credits.convert: unknown converter 'money'"),
    (lambda d: d["operations"]["getBalance"].update(success=299),
     "operations.getBalance.success: must be one of"),
    (lambda d: d["operations"]["getBalance"].pop("command"),
     "operations.getBalance: missing key 'command'"),
    (lambda d: d["operations"]["sendMessage"]["request"]["source"].update(**{"from": "body/x"}),
     "operations.sendMessage.request.source.from: 'body/x' is not a JSON pointer"),
    (lambda d: d["operations"]["listDeliveryReports"].update(command=[{"name": "dlr"}, {"name": "x"}]),
     "operations.listDeliveryReports.command: every choice but the last needs `when`"),
    (lambda d: d["operations"]["sendMessage"]["request"]["add_unsubscribe"].update(
        convert={"enum": "nope"}),
     "no 'nope' under enums:"),
    (lambda d: d["operations"]["removeFromBlacklist"]["response"]["removed"].update(
        convert=[{"match": "("}, "integer"]),
     "operations.removeFromBlacklist.response.removed.convert.0.match: bad regular expression"),
    (lambda d: d["operations"]["sendMessage"]["request"]["source"].update(
        convert={"match": "(.*)"}),
     "operations.sendMessage.request.source.convert: match:(.*) only reads answers"),
    (lambda d: d["operations"]["deleteContactList"]["not_found"]["says"].update(
        lists="contact list {cl/id} is gone"),
     "operations.deleteContactList.not_found.says.lists: no 'lists' under not_found: in statuses.yaml"),
    (lambda d: d["operations"]["previewMessage"].update(compute={"guess": {}}),
     "operations.previewMessage.compute: unknown computation 'guess'"),
    (lambda d: d["operations"]["previewMessage"]["compute"]["price"].pop("text"),
     "operations.previewMessage.compute.price: missing ['text']"),
    (lambda d: d["operations"]["previewMessage"]["compute"]["price"].update(
        credits="sendMessage"),
     "operations.previewMessage.compute: asks 'sendMessage', which is no GET operation"),
    (lambda d: d["operations"]["createSubscriber"].update(spends={"transfer": {}}),
     "operations.createSubscriber.spends.transfer: needs {credits: <ElementPath>}"),
    (lambda d: d["operations"]["previewMessage"].update(response={"x": {"from": "x"}}),
     "operations.previewMessage: a computed operation's answer is the computation's"),
    (lambda d: d["operations"]["getBalance"].update(http="GET /v1/messages/bulk"),
     None),  # same path, other method: allowed
    (lambda d: d["operations"]["getBalance"].update(http="POST /v1/messages"),
     "operations.getBalance: same http as sendMessage"),
    (lambda d: d["events"].update({"message.sent": {"from": "sendMessage"}}),
     "events.message.sent.from: an event comes from an operation that only reads"),
    (lambda d: d["events"].update({"message.seen": {"from": "listIncomingMessages",
                                                     "below": "/x"}}),
     "events.message.seen: an operation with a feed gives its rows; one without needs below"),
    (lambda d: d["events"].update({"account.low": {"from": "getBalance"}}),
     "events.account.low: an operation with a feed gives its rows; one without needs below"),
    (lambda d: d["events"].update({"Balance": {"from": "getBalance", "below": "/credits"}}),
     "events.Balance: an event type is lowercase words joined by dots"),
    (lambda d: d["events"].update({"account.gone": {"from": "getAccount", "below": "/x"}}),
     "events.account.gone.from: no operation 'getAccount'"),
])
def test_load_table_names_the_place_of_a_mistake(edit, message):
    data = _broken(edit)
    if message is None:
        load_table(data)
        return
    with pytest.raises(MappingError, match=re.escape(message)):
        load_table(data)


def test_every_command_of_the_document_is_reachable():
    commands = {name for op in load_table().operations for name in op.command_names}
    assert commands == {
        "sms", "bulk", "cancel", "balance", "dlr", "dlrByDate", "incoming", "blacklist",
        "rmNumBL", "addSub", "updateAmountSub", "getBlanceSubs", "newCL", "removeCL",
        "addNumCL", "rmNumCL", "getCL", "getCLbyID", "verify_phone",
    }


def test_statuses_cover_every_code_of_the_document_and_notes():
    documented = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 502, 503, 504, 510, 511, 933, 944, 955,
                  966, 977, 986, 988, 989, 990, 991, 992, 993, 994, 995, 996, 997, 998, 999}
    from_notes = {12, 515, 714, 715}
    assert set(load_table().statuses.codes) >= documented | from_notes


def _commands() -> set[str]:
    return {name for op in load_table().operations for name in op.command_names}


def _words(source: str) -> set[str]:
    """The words a module says: in its comments and strings, and the names it binds or reads
    (an attribute read, ``group.cancel_scope.cancel()``, is a library's word, not ours)."""
    words: set[str] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.COMMENT, tokenize.STRING):
            words.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", token.string))
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            words.add(node.name)
        elif isinstance(node, ast.arg):
            words.add(node.arg)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            words.add(node.attr)
        elif isinstance(node, ast.keyword) and node.arg:
            words.add(node.arg)
        elif isinstance(node, ast.alias):
            words.add(node.asname or node.name)
    return words


def _engine() -> list[Path]:
    """Every module of proxy/ and its sub-packages but the sandbox (the upstream's twin)."""
    return sorted(path for path in PROXY.rglob("*.py")
                  if "sandbox" not in path.relative_to(PROXY).parts)


def test_the_engine_names_no_command():
    """The table is the only place that knows the upstream's commands: none of them is a word
    of the engine (every module of proxy/ and its sub-packages but the sandbox), with no
    exemption."""
    commands = _commands()
    modules = _engine()
    assert {"store", "events"} <= {path.parent.name for path in modules}
    for path in modules:
        named = commands & _words(path.read_text())
        assert not named, f"{path.relative_to(PROXY)} names {sorted(named)}"


def test_the_word_check_finds_a_command_wherever_it_is_said():
    for source in ('x = "dlrByDate"\n', "# calls balance\n", "def getCLbyID(): pass\n",
                   "def f(rmNumBL): pass\n", "f(verify_phone=1)\n", "o.bulk = 1\n",
                   '"""the sms command"""\n'):
        assert _commands() & _words(source), source
    assert not _commands() & _words("group.cancel_scope.cancel()\nsmsleads = 'SMS'\n")


def test_the_sandbox_answers_exactly_the_commands_of_the_table():
    assert set(COMMANDS) == _commands()


def test_the_table_loads_under_python_O():
    """Checks are exceptions, not asserts that -O would remove."""
    code = ("from proxy.mapping import load_table, MappingError\n"
            "import yaml, pathlib\n"
            "d = yaml.safe_load(pathlib.Path('proxy/mapping.yaml').read_text())\n"
            "d['operations']['getBalance']['success'] = 299\n"
            "try:\n    load_table(d)\nexcept MappingError:\n    print('refused')\n")
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True,
                         cwd=PROXY.parent, check=True)
    assert out.stdout.strip() == "refused"


PROTOCOL = (PROXY.parent / "docs" / "upstream-protocol.md").read_text()


def test_every_command_has_its_section_in_the_protocol_document():
    headings = set(re.findall(r"^### (\S+)$", PROTOCOL, re.M))
    assert _commands() <= headings, sorted(_commands() - headings)


def test_every_status_code_is_in_the_protocol_document():
    table = PROTOCOL.split("### Code table", 1)[1].split("\n## ", 1)[0]
    listed = {int(code) for code in re.findall(r"^\| *`?(-?\d+)`? *\|", table, re.M)}
    assert set(load_table().statuses.codes) <= listed


def test_the_code_cites_the_protocol_document_in_the_repository():
    """Comments cite docs/upstream-protocol.md, never a file outside the repository, and every
    section they cite exists."""
    anchors = {re.sub(r"[^\w\- ]", "", heading.lower()).strip().replace(" ", "-")
               for heading in re.findall(r"^#+ (.+)$", PROTOCOL, re.M)}
    outside = re.compile(r"NOTES\.md|smsleads-xml-api|shared/upstream")
    for path in [*PROXY.rglob("*.py"), *PROXY.rglob("*.yaml")]:
        text = path.read_text()
        assert not outside.search(text), path
        for anchor in re.findall(r"upstream-protocol\.md#([\w\-]+)", text):
            assert anchor in anchors, (path, anchor)
