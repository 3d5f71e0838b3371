"""Agent Legs sandbox driver: a persistent Python namespace behind a length-prefixed JSON protocol.

Runs as PID 1 of the sandbox container, on stdin/stdout. Each request is a 4-byte big-endian
length plus a JSON object; each response likewise. The protocol uses a private duplicate of the
original stdout; user code (and its subprocesses) write to fds 1/2 which point at capture files,
so nothing the code prints can corrupt the protocol. Standard library only.
"""

import ast
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import traceback

WORKSPACE = "/workspace"
CAPTURE_DIR = "/run/agent-legs"  # its own tmpfs: code filling /tmp must not silence its output
MAX_SCAN = 5000


def _read_exact(fd, n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def _send(fd, obj):
    data = json.dumps(obj, default=repr).encode()
    os.write(fd, struct.pack(">I", len(data)) + data)


def _snapshot():
    seen = {}
    for root, dirs, files in os.walk(WORKSPACE):
        dirs[:] = [d for d in dirs if not d.startswith(".agent-legs")]
        for name in files:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            seen[os.path.relpath(path, WORKSPACE)] = (st.st_mtime_ns, st.st_size)
            if len(seen) >= MAX_SCAN:
                return seen
    return seen


def _read_capture(path, limit):
    with open(path, "rb") as f:
        data = f.read(limit + 1)
        total = os.fstat(f.fileno()).st_size
    return data[:limit].decode("utf-8", "replace"), total


def _save_figures(stamp):
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return []
    saved = []
    for num in plt.get_fignums():
        rel = "figures/figure-%s-%d.png" % (stamp, num)
        os.makedirs(os.path.join(WORKSPACE, "figures"), exist_ok=True)
        try:
            plt.figure(num).savefig(os.path.join(WORKSPACE, rel), dpi=100, bbox_inches="tight")
            saved.append(rel)
        except Exception:  # a broken figure must not break the call
            pass
    plt.close("all")
    return saved


class Kernel:
    def __init__(self):
        self.ns = {"__name__": "__main__", "__builtins__": __builtins__}
        self.count = 0

    def run_python(self, code):
        self.count += 1
        tree = ast.parse(code, filename="<cell>", mode="exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<cell>", "exec"), self.ns)
        if last is not None:
            value = eval(compile(last, "<cell>", "eval"), self.ns)
            if value is not None:
                self.ns["_"] = value
                return repr(value)
        return None


def main():
    proto_out = os.dup(1)
    proto_in = os.dup(0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # user code reading stdin gets EOF, not our protocol
    os.makedirs(CAPTURE_DIR, exist_ok=True)
    out_path, err_path = CAPTURE_DIR + "/stdout", CAPTURE_DIR + "/stderr"
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))  # PID 1: stop promptly when asked
    try:
        import matplotlib

        matplotlib.use("Agg")
    except Exception:
        pass
    os.chdir(WORKSPACE)
    kernel = Kernel()
    _send(proto_out, {"ready": True, "python": sys.version.split()[0]})
    while True:
        try:
            (size,) = struct.unpack(">I", _read_exact(proto_in, 4))
            req = json.loads(_read_exact(proto_in, size))
        except EOFError:
            return
        limit = int(req.get("max_output_bytes", 100000))
        before = _snapshot() if req.get("track_files", True) else {}
        out_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        err_fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        saved = os.dup(1), os.dup(2)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        sys.stdout = io.TextIOWrapper(os.fdopen(os.dup(1), "wb", buffering=0), write_through=True)
        sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(2), "wb", buffering=0), write_through=True)
        result = {"value": None, "error": None, "exit_code": None}
        started = time.monotonic()
        try:
            if req.get("language") == "bash":
                proc = subprocess.run(["/bin/bash", "-c", req["code"]], cwd=WORKSPACE, stdin=subprocess.DEVNULL,
                                      stdout=1, stderr=2)
                result["exit_code"] = proc.returncode
            else:
                result["value"] = kernel.run_python(req["code"])
        except SystemExit as exc:
            result["error"] = "SystemExit: %s" % (exc.code,)
        except BaseException:
            etype, value, tb = sys.exc_info()
            # hide the driver's own frames: the model needs its code's traceback only
            while tb is not None and tb.tb_frame.f_code.co_filename != "<cell>":
                tb = tb.tb_next
            result["error"] = "".join(traceback.format_exception(etype, value, tb))
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                    stream.close()
                except Exception:
                    pass
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in (*saved, out_fd, err_fd):
                os.close(fd)
        result["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
        result["figures"] = _save_figures("%d-%d" % (os.getpid(), kernel.count)) if req.get("language") != "bash" else []
        result["stdout"], result["stdout_bytes"] = _read_capture(out_path, limit)
        result["stderr"], result["stderr_bytes"] = _read_capture(err_path, limit)
        if req.get("track_files", True):
            after = _snapshot()
            result["changed"] = sorted(p for p, sig in after.items() if before.get(p) != sig)
        _send(proto_out, result)


if __name__ == "__main__":
    main()
