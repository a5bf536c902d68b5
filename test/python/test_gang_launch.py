"""A gang's machine (workflows/gang.ts) learns its rank and rank 0's rendezvous from its environment, not the spec."""
from __future__ import annotations

import pytest

from ratioloop_py.errors import BadInput
from ratioloop_py.launch import accelerate_config, config_file_name, resolve_launch

GANG = {"num_processes": 4, "num_machines": 2}  # no main_process_ip in the spec: the gang gives it


def test_rank_and_rendezvous_come_from_the_environment(monkeypatch):
    with pytest.raises(BadInput, match="RATIOLOOP_MAIN_PROCESS_IP"):
        resolve_launch(GANG, gpu=True)
    monkeypatch.setenv("RATIOLOOP_MACHINE_RANK", "1")
    monkeypatch.setenv("RATIOLOOP_MAIN_PROCESS_IP", "10.1.2.3")
    monkeypatch.setenv("RATIOLOOP_MAIN_PROCESS_PORT", "41234")
    L = resolve_launch({**GANG, "main_process_ip": "stale.example", "main_process_port": 29500}, gpu=True)
    cfg = accelerate_config(L, 1)
    assert (cfg["machine_rank"], cfg["main_process_ip"], cfg["main_process_port"]) == (1, "10.1.2.3", 41234)
    monkeypatch.setenv("RATIOLOOP_MAIN_PROCESS_PORT", "port")
    with pytest.raises(BadInput, match="RATIOLOOP_MAIN_PROCESS_PORT"):
        resolve_launch(GANG, gpu=True)


def test_each_machine_writes_its_own_accelerate_config(monkeypatch):
    # The machines share the stage folder: one file for all would carry whichever machine_rank was written last.
    monkeypatch.setenv("RATIOLOOP_MAIN_PROCESS_IP", "10.1.2.3")
    names = set()
    for rank in (0, 1):
        monkeypatch.setenv("RATIOLOOP_MACHINE_RANK", str(rank))
        names.add(config_file_name(resolve_launch(GANG, gpu=True)))
    assert names == {"accelerate_config.yaml", "accelerate_config.machine1.yaml"}
