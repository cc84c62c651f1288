"""A Windows service for stoker: a small launcher, registered with `sc.exe create`, with recovery actions. Pure.

The launcher is a pywin32 service (`servicemanager`) hosted by the *base* interpreter behind the virtual
environment, not the venv's `python.exe` (a redirector that starts another process) nor pywin32's
`pythonservice.exe`: both lose the venv's DLLs, and the service then fails to start with error 1053. So
before it imports pywin32 the launcher adds the venv's site-packages and DLL folders itself; then it runs
`stoker up` (or `stoker worker`) from the venv as a child, its output in the data dir's logs and start, stop
and failures in the Windows event log. When the child dies the launcher exits without reporting a stop, so
the service manager's recovery actions restart it: after 5 s, 10 s, then 30 s.
"""

from __future__ import annotations

from ops.install.plan import (
    LAUNCHER_FILE,
    Command,
    Host,
    Plan,
    PlannedFile,
    Request,
    ServiceSpec,
    gpu_record,
    record_path,
    service_spec,
)

RESTART_DELAYS_MS = (5_000, 10_000, 30_000)
RESET_AFTER_S = 86_400  # the failure count starts again after a calm day

LAUNCHER = '''"""stoker's Windows service launcher, written by `stoker service install` (uninstall removes it)."""
import os
import signal
import site
import subprocess
import sys
import time

CONFIG = __CONFIG__

# Error 1053 from a virtual environment: the DLLs pywin32 needs are not on the search path. Add them first.
for folder in CONFIG["site_dirs"]:
    site.addsitedir(folder)
for folder in CONFIG["dll_dirs"]:
    if os.path.isdir(folder):
        os.add_dll_directory(folder)
os.environ["PATH"] = os.pathsep.join([*CONFIG["dll_dirs"], os.environ.get("PATH", "")])

import servicemanager  # noqa: E402  (pywin32, importable only now)
import win32event  # noqa: E402
import win32service  # noqa: E402
import win32serviceutil  # noqa: E402


class StokerService(win32serviceutil.ServiceFramework):
    _svc_name_ = CONFIG["name"]
    _svc_display_name_ = CONFIG["display_name"]
    _svc_description_ = CONFIG["description"]

    def __init__(self, args):
        super().__init__(args)
        self.stop_requested = win32event.CreateEvent(None, 0, 0, None)
        self.child = None

    def SvcStop(self):
        self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=CONFIG["stop_timeout_s"] * 1000)
        win32event.SetEvent(self.stop_requested)

    def SvcDoRun(self):
        os.makedirs(CONFIG["log_dir"], exist_ok=True)
        with open(CONFIG["log"], "ab") as out:
            self.child = subprocess.Popen(CONFIG["argv"], cwd=CONFIG["data_dir"], env={**os.environ, **CONFIG["env"]},
                                          stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          creationflags=subprocess.CREATE_NEW_PROCESS_GROUP)
        servicemanager.LogInfoMsg(f"{self._svc_name_}: started {CONFIG['argv']} (pid {self.child.pid}); "
                                  f"output in {CONFIG['log']}")
        while win32event.WaitForSingleObject(self.stop_requested, 1000) != win32event.WAIT_OBJECT_0:
            code = self.child.poll()
            if code is not None:
                servicemanager.LogErrorMsg(f"{self._svc_name_}: exited with {code}; the recovery actions restart "
                                           f"it (see {CONFIG['log']})")
                os._exit(1)  # no SERVICE_STOPPED: the service manager counts a failure and restarts it
        self.stop_child()
        servicemanager.LogInfoMsg(f"{self._svc_name_}: stopped")

    def stop_child(self):
        # CTRL_BREAK reaches the child's process group: stoker stops its processes in order, as on Ctrl-C.
        self.child.send_signal(signal.CTRL_BREAK_EVENT)
        deadline = time.monotonic() + CONFIG["stop_timeout_s"]
        while self.child.poll() is None and time.monotonic() < deadline:
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=5000)
            time.sleep(1)
        if self.child.poll() is None:
            self.child.kill()


if __name__ == "__main__":
    servicemanager.Initialize()
    servicemanager.PrepareToHostSingle(StokerService)
    servicemanager.StartServiceCtrlDispatcher()
'''


def launcher(spec: ServiceSpec, host: Host) -> str:
    """The launcher script, with what it needs written in as a Python literal."""
    config = {"name": spec.name, "display_name": spec.description, "description": f"{spec.description} "
              "(installed by `stoker service install`)", "argv": list(spec.argv), "env": dict(sorted(spec.env.items())),
              "data_dir": spec.data_dir, "log_dir": spec.log_dir, "log": spec.log_dir + "\\service.log",
              "stop_timeout_s": spec.stop_timeout_s, "site_dirs": list(host.site_dirs), "dll_dirs": list(host.dll_dirs)}
    return LAUNCHER.replace("__CONFIG__", repr(config))


def bin_path(host: Host, launcher_path: str) -> str:
    """What the service manager starts: the base interpreter on the launcher, each quoted."""
    return f'"{host.base_python or host.python}" "{launcher_path}"'


def plan(request: Request, host: Host) -> Plan:
    """Write the launcher and the GPU record; create the service with recovery actions; start it."""
    spec = service_spec(request, host, "windows", log_dir=request.data_dir.rstrip("\\") + "\\logs", system=True)
    name = spec.name
    path = record_path(request.data_dir, LAUNCHER_FILE, "windows")
    actions = "/".join(f"restart/{ms}" for ms in RESTART_DELAYS_MS)
    commands = (
        Command(argv=("sc.exe", "create", name, "binPath=", bin_path(host, path), "start=", "delayed-auto",
                      "DisplayName=", spec.description), why="register the service, started at boot"),
        Command(argv=("sc.exe", "description", name, f"{spec.description} (installed by `stoker service install`)"),
                why="say what it is", must=False),
        Command(argv=("sc.exe", "failure", name, "reset=", str(RESET_AFTER_S), "actions=", actions),
                why="restart it after 5 s, 10 s, then 30 s when it fails"),
        Command(argv=("sc.exe", "failureflag", name, "1"), why="a non-zero exit counts as a failure too", must=False),
        Command(argv=("sc.exe", "start", name), why="start it now"),
    )
    return Plan(target="windows", name=name, role=request.role, system=True, data_dir=request.data_dir, argv=spec.argv,
                files=(PlannedFile(path=path, mode=0o644, content=launcher(spec, host)), gpu_record(request, host)),
                commands=commands,
                undo_before=(Command(argv=("sc.exe", "stop", name), why="stop it", must=False),
                             Command(argv=("sc.exe", "delete", name), why="unregister it", must=False)),
                notes=(f"logs: {spec.log_dir}\\service.log and the Windows event log (Application, {name})",
                       "needs pywin32 in this environment: pip install pywin32"),
                log_files=(f"{spec.log_dir}\\service.log",),
                controls={"start": (("sc.exe", "start", name),), "stop": (("sc.exe", "stop", name),),
                          "restart": (("powershell", "-NoProfile", "-Command", f"Restart-Service -Name {name}"),),
                          "status": (("sc.exe", "query", name), ("sc.exe", "qfailure", name))})
