"""keep_freed_memory: glibc's thresholds raised, so that freed tensor memory stays in the heap for reuse."""

import os
import platform
import subprocess
import sys

import pytest
import torch

from redgame.llm import cpu_allocator

GLIBC = platform.libc_ver()[0] == "glibc"

# Prints how many bytes glibc mapped for one 3 MiB tensor (its own mmap, given back to the
# kernel when freed) and how many bytes the heap gave back to the kernel when it was freed.
# A fresh process each: the setting lasts for the process's life.
PROBE = """
import ctypes, sys, torch
from redgame.llm import cpu_allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    assert cpu_allocator.keep_freed_memory(torch.device('cpu'))
if sys.argv[1] == "user":
    assert not cpu_allocator.keep_freed_memory(torch.device('cpu'))
before = libc.mallinfo2()
tensor = torch.ones(1024, 768)
live = libc.mallinfo2()
del tensor
freed = libc.mallinfo2()
print(live.hblkhd - before.hblkhd, live.arena - freed.arena)
"""


def mapped_and_trimmed(mode: str, env: dict | None = None) -> tuple[int, int]:
    env = {k: v for k, v in os.environ.items() if k not in cpu_allocator.USER_SETTINGS + ("GLIBC_TUNABLES",)} | (env or {})
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env)
    mapped, trimmed = done.stdout.split()[-2:]
    return int(mapped), int(trimmed)


@pytest.mark.skipif(not GLIBC, reason="mallopt and mallinfo2 are glibc's")
def test_a_freed_activation_stays_in_the_heap():
    """By default a 3 MiB tensor gets its own mapping, returned on free; kept, it lives in the heap, which keeps it."""
    mapped, _ = mapped_and_trimmed("default")
    assert mapped >= 3 << 20
    mapped, trimmed = mapped_and_trimmed("keep")
    assert mapped == 0 and trimmed == 0


def test_off_glibc_it_does_nothing(monkeypatch):
    monkeypatch.setattr(cpu_allocator.ctypes.util, "find_library", lambda name: None)
    assert cpu_allocator._glibc_mallopt() is None


def test_other_devices_leave_the_allocator_alone(monkeypatch):
    monkeypatch.setattr(cpu_allocator, "_raise_thresholds", lambda: pytest.fail("glibc touched for a GPU run"))
    assert cpu_allocator.keep_freed_memory(torch.device("meta")) is False


@pytest.mark.skipif(not GLIBC, reason="mallopt and mallinfo2 are glibc's")
@pytest.mark.parametrize("env", [{"MALLOC_MMAP_THRESHOLD_": "131072"}, {"MALLOC_TRIM_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}])
def test_the_users_own_malloc_settings_stay(env):
    """With glibc's allocator tuned in the environment, nothing is raised: the tensor is mapped on its own as by default."""
    mapped, _ = mapped_and_trimmed("user", env)
    assert mapped >= 3 << 20


@pytest.mark.parametrize("env, theirs", [
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, False), ({"MALLOC_ARENA_MAX": "2"}, False),
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1:glibc.malloc.trim_threshold=0"}, True),
    ({"MALLOC_TOP_PAD_": "0"}, True)])
def test_only_the_thresholds_we_raise_count_as_the_users(monkeypatch, env, theirs):
    """An arena cap or huge pages (a container's usual settings) turned the speed-up off."""
    for name in cpu_allocator.USER_SETTINGS + ("GLIBC_TUNABLES", "MALLOC_ARENA_MAX"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cpu_allocator.user_set_thresholds() is theirs
