from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from proxy.mapping import MappingError, load_table

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
    (lambda d: d["operations"]["getBalance"].update(http="GET /v1/messages/bulk"),
     None),  # same path, other method: allowed
    (lambda d: d["operations"]["getBalance"].update(http="POST /v1/messages"),
     "operations.getBalance: same http as sendMessage"),
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


def test_the_engine_names_no_command():
    """The table is the only place that knows the upstream's commands."""
    commands = {name for op in load_table().operations for name in op.command_names}
    engine = [p for p in PROXY.glob("*.py")]
    for path in engine:
        source = path.read_text()
        for command in commands - {"sms", "bulk", "cancel", "balance", "dlr", "incoming",
                                   "blacklist"}:
            assert f'"{command}"' not in source and f"'{command}'" not in source, (path, command)


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
