#!/usr/bin/env python3
"""Snapshot benchmark (issue 7): snapshot create time and size, restore latency to the first
guest instruction, for several guest memory sizes, for vessel and for QEMU's save/restore to
a file (migrate "exec:cat > FILE", then -incoming "exec:cat FILE") in the same environment.

The guest is vessel's kernel and initramfs running `echo ready; while :; do sleep 1; done`
(same kernel, initrd and command line for both VMMs), 1 vCPU. A snapshot is taken once
"ready" is on the console.

vessel: `vessel snapshot create --stop` (wall time of that command) and the size of the
snapshot directory on disk; restore = from spawning `vessel restore --timing` to its
"to first guest instruction" line (wall), plus the VMM's own figure in that line.
QEMU: `migrate exec:cat > FILE` (wall time until query-migrate says completed) and the
file's size; restore = from spawning `qemu -incoming "exec:cat FILE"` to query-status
"running".

Usage (PVM host): tests/harness/l1run --mem 8192 -- benchmarks/snapshot_bench.py \
                      --vessel build/vessel --sizes 128,1024,4096 --runs 5

--uffd (vessel only): one snapshot restored three ways, lazily (MAP_PRIVATE), with
`restore --uffd` recording its working set, and with `restore --uffd` prefetching it; each
timed to the first instruction and until the guest has read a file of its initramfs.
--drop-caches makes each of those restores read the snapshot from its file system: in the
harness, share a host directory read-write (9p) and write the snapshots there:
    tests/harness/l1run --rw /var/tmp/sb -- benchmarks/snapshot_bench.py --uffd \
        --drop-caches --work-dir /var/tmp/sb ...
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

def now():
    return time.monotonic()

def wait_for(path, text, timeout=300, proc=None):
    t0 = now()
    while now() - t0 < timeout:
        try:
            with open(path, 'rb') as f:
                if text.encode() in f.read():
                    return True
        except FileNotFoundError:
            pass
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.002)
    return False

def du_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.lstat(os.path.join(root, f)).st_blocks * 512
    return total if os.path.isdir(path) else os.lstat(path).st_blocks * 512

def vessel_round(a, work, mem, i):
    d = os.path.join(work, f'v{mem}-{i}')
    vid = f'bench-{os.getpid()}-{mem}-{i}'
    con = os.path.join(work, f'v{mem}-{i}.console')
    boot = subprocess.Popen([a.vessel, 'boot', '--kernel', a.kernel, '--memory', str(mem),
                             '--id', vid, '--console-log', con, '--', 'sh', '-c',
                             'echo ready; while :; do sleep 1; done'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if not wait_for(con, 'ready', proc=boot):
        boot.kill()
        raise SystemExit('vessel guest did not get ready: ' + boot.stderr.read().decode())
    t = now()
    r = subprocess.run([a.vessel, 'snapshot', 'create', '--stop', vid, d],
                       capture_output=True, text=True, env=dict(os.environ, VESSEL_SNAPSHOT_TIMING='1'))
    create_ms = (now() - t) * 1e3
    if r.returncode != 0:
        raise SystemExit('snapshot create failed: ' + r.stderr)
    boot.wait(timeout=60)
    size = du_bytes(d)
    # Restore: drop nothing from the page cache (the snapshot was just written, as when a
    # template is restored repeatedly); the first-instruction line ends the measurement.
    wall_ms, vmm_ms, line = restore_timing(a, work, d, f'v{mem}-{i}')
    apply_ms = float(line.split('apply ')[1].split(' ms')[0])
    shutil.rmtree(d)
    return dict(create_ms=create_ms, size=size, restore_wall_ms=wall_ms,
                restore_vmm_ms=vmm_ms, apply_ms=apply_ms)

class Qmp:
    def __init__(self, path, timeout=60):
        t0 = now()
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                if now() - t0 > timeout:
                    raise
                time.sleep(0.001)
        self.f = self.s.makefile('rw')
        self.f.readline()
        self.cmd('qmp_capabilities')
    def cmd(self, name, **args):
        self.f.write(json.dumps({'execute': name, 'arguments': args}) + '\n')
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if 'return' in r or 'error' in r:
                return r

def qemu_round(a, work, mem, i):
    q = os.path.join(work, f'q{mem}-{i}')
    con = q + '.console'
    base = ['qemu-system-x86_64', '-M', 'microvm,acpi=off', '-accel', 'kvm', '-cpu', 'host',
            '-m', str(mem), '-smp', '1', '-nodefaults', '-no-user-config', '-display', 'none',
            '-no-reboot', '-kernel', a.kernel, '-initrd', a.initrd, '-append', a.cmdline]
    src = subprocess.Popen(base + ['-serial', 'file:' + con, '-qmp', f'unix:{q}.qmp,server,nowait'],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if not wait_for(con, 'ready', proc=src):
        src.kill()
        raise SystemExit('qemu guest did not get ready: ' + src.stderr.read().decode())
    m = Qmp(q + '.qmp')
    t = now()
    m.cmd('migrate', uri=f'exec:cat > {q}.state')
    while m.cmd('query-migrate')['return'].get('status') not in ('completed', 'failed'):
        time.sleep(0.001)
    create_ms = (now() - t) * 1e3
    m.cmd('quit')
    src.wait(timeout=60)
    size = du_bytes(q + '.state')
    t = now()
    dst = subprocess.Popen(base + ['-serial', 'file:' + con + '.2', '-qmp',
                                   f'unix:{q}.qmp2,server,nowait', '-incoming', f'exec:cat {q}.state'],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    m2 = Qmp(q + '.qmp2')
    while m2.cmd('query-status')['return'].get('status') != 'running':
        if dst.poll() is not None:
            raise SystemExit('qemu restore failed: ' + dst.stderr.read().decode())
        time.sleep(0.0005)
    wall_ms = (now() - t) * 1e3
    m2.cmd('quit')
    dst.wait(timeout=60)
    os.unlink(q + '.state')
    return dict(create_ms=create_ms, size=size, restore_wall_ms=wall_ms)

def restore_timing(a, work, d, tag):
    errf = os.path.join(work, f'{tag}.restore.err')
    with open(errf, 'wb') as ef:
        t = now()
        p = subprocess.Popen([a.vessel, 'restore', '--timing', '--console-log', '/dev/null', d],
                             stdout=subprocess.DEVNULL, stderr=ef)
        ok = wait_for(errf, 'to first guest instruction', timeout=120, proc=p)
        wall_ms = (now() - t) * 1e3
        p.terminate()
        p.wait(timeout=60)
    line = open(errf).read()
    if not ok:
        raise SystemExit('vessel restore failed: ' + line)
    return wall_ms, float(line.split('to first guest instruction ')[1].split(' ms')[0]), line

def vessel_diff_round(a, work, mem, i):
    """--track-dirty boot; a full snapshot (the VM goes on), 1 s later a diff that stops it;
    restore from the diff (its parent's memory mapped, the diff's pages copied over)."""
    base, diff = os.path.join(work, f'b{mem}-{i}'), os.path.join(work, f'd{mem}-{i}')
    vid = f'benchd-{os.getpid()}-{mem}-{i}'
    con = os.path.join(work, f'd{mem}-{i}.console')
    boot = subprocess.Popen([a.vessel, 'boot', '--kernel', a.kernel, '--memory', str(mem),
                             '--id', vid, '--track-dirty', '--console-log', con, '--', 'sh', '-c',
                             'echo ready; while :; do sleep 1; done'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if not wait_for(con, 'ready', proc=boot):
        boot.kill()
        raise SystemExit('vessel guest did not get ready: ' + boot.stderr.read().decode())
    out = {}
    for name, flags, d in (('full', [], base), ('diff', ['--diff', '--stop'], diff)):
        if name == 'diff':
            time.sleep(1)
        t = now()
        r = subprocess.run([a.vessel, 'snapshot', 'create', *flags, vid, d],
                           capture_output=True, text=True)
        out[name + '_create_ms'] = (now() - t) * 1e3
        if r.returncode != 0:
            raise SystemExit('snapshot create failed: ' + r.stderr)
        out[name + '_size'] = du_bytes(d)
    boot.wait(timeout=60)
    out['restore_wall_ms'], out['restore_vmm_ms'], _ = restore_timing(a, work, diff, f'd{mem}-{i}')
    shutil.rmtree(base)
    shutil.rmtree(diff)
    return out

# The --uffd round's guest: after each sleep it reads its busybox binary (a file of the
# initramfs, so guest RAM the restore must bring back) and says so.
UFFD_GUEST = 'echo ready; while :; do sleep 0.3; md5sum /bin/busybox >/dev/null; echo tick; done'
UFFD_MODES = (('lazy', []), ('uffd-record', ['--uffd']), ('uffd-prefetch', ['--uffd']))

def restore_to_tick(a, work, d, tag, flags):
    """Spawns `vessel restore --timing FLAGS d`; returns wall ms to its first-instruction line,
    the VMM's own figure there, wall ms until the restored guest prints `tick` (it read its
    busybox after the restore), and the uffd prefetch line's pages and ms (0 without)."""
    errf, con = os.path.join(work, f'{tag}.err'), os.path.join(work, f'{tag}.console')
    with open(errf, 'wb') as ef:
        t = now()
        p = subprocess.Popen([a.vessel, 'restore', '--timing', '--console-log', con, *flags, d],
                             stdout=subprocess.DEVNULL, stderr=ef)
        ok = wait_for(errf, 'to first guest instruction', timeout=120, proc=p)
        first_ms = (now() - t) * 1e3
        ok = ok and wait_for(con, 'tick', timeout=120, proc=p)
        tick_ms = (now() - t) * 1e3
        # SIGTERM stops the VM; a recording restore writes its working set as it stops.
        p.terminate()
        p.wait(timeout=120)
    err = open(errf).read()
    if not ok:
        raise SystemExit(f'vessel restore {flags} failed: ' + err)
    vmm_ms = float(err.split('to first guest instruction ')[1].split(' ms')[0])
    pages, runs, read_ms, install_ms = 0, 0, 0.0, 0.0
    if 'pages prefetched' in err:
        # "working set read R ms, prefetch I ms (N runs), P pages prefetched"
        line = err.split('restore uffd: working set read ')[1].split('\n')[0]
        read_ms = float(line.split(' ms')[0])
        install_ms = float(line.split('prefetch ')[1].split(' ms')[0])
        runs = int(line.split('(')[1].split(' runs')[0])
        pages = int(line.split(', ')[-1].split(' pages')[0])
    return dict(first_ms=first_ms, vmm_ms=vmm_ms, tick_ms=tick_ms, pages=pages, runs=runs,
                read_ms=read_ms, install_ms=install_ms)

def vessel_uffd_round(a, work, mem, i):
    """One snapshot (taken after the guest's first tick), restored three ways in a row:
    MAP_PRIVATE (lazy, page cache), --uffd with no working set (records memory.ws as it is
    stopped), --uffd again (installs that working set before the vCPUs start)."""
    d = os.path.join(work, f'u{mem}-{i}')
    vid = f'benchu-{os.getpid()}-{mem}-{i}'
    con = os.path.join(work, f'u{mem}-{i}.console')
    boot = subprocess.Popen([a.vessel, 'boot', '--kernel', a.kernel, '--memory', str(mem),
                             '--id', vid, '--console-log', con, '--', 'sh', '-c', UFFD_GUEST],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if not wait_for(con, 'tick', proc=boot):
        boot.kill()
        raise SystemExit('vessel guest did not get ready: ' + boot.stderr.read().decode())
    r = subprocess.run([a.vessel, 'snapshot', 'create', '--stop', vid, d],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit('snapshot create failed: ' + r.stderr)
    boot.wait(timeout=60)
    out = {}
    for name, flags in UFFD_MODES:
        if a.drop_caches:
            # Cold: the memory file (and memory.ws) come from the file system, not the page
            # cache, as when a snapshot is restored long after it was made.
            subprocess.run(['sync'], check=True)
            with open('/proc/sys/vm/drop_caches', 'w') as f:
                f.write('3\n')
        out[name] = restore_to_tick(a, work, d, f'u{mem}-{i}-{name}', flags)
        if name == 'uffd-record':
            ws = os.path.join(d, 'memory.ws')
            if not os.path.exists(ws):
                raise SystemExit('the recording restore left no working set')
            out['ws_size'] = os.path.getsize(ws)
    shutil.rmtree(d)
    return out

def med(rs, k):
    return statistics.median(r[k] for r in rs)

def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument('--vessel', default=os.path.join(root, 'build', 'vessel'))
    ap.add_argument('--kernel', default=os.environ.get('VESSEL_KERNEL', os.path.join(
        os.environ.get('VESSEL_CACHE', '/var/cache/vessel'), 'kernel', 'current', 'vmlinux')))
    ap.add_argument('--sizes', default='128,1024')
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--no-qemu', action='store_true')
    ap.add_argument('--diff', action='store_true',
                    help='vessel only: full then diff snapshot of a --track-dirty VM')
    ap.add_argument('--uffd', action='store_true',
                    help='vessel only: restore lazily (MAP_PRIVATE), with --uffd recording the '
                         'working set, and with --uffd prefetching it')
    ap.add_argument('--drop-caches', action='store_true',
                    help='--uffd: drop the page cache before each restore (needs a --work-dir '
                         'on a file system whose pages can be dropped: not tmpfs)')
    ap.add_argument('--work-dir', default='/var/tmp',
                    help='where snapshots are written (default /var/tmp)')
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix='vessel-snapbench-', dir=a.work_dir)
    try:
        a.initrd = os.path.join(work, 'guest.cpio')
        subprocess.run([a.vessel, 'boot', '--kernel', a.kernel, '--write-initrd', a.initrd, '--',
                        'sh', '-c', 'echo ready; while :; do sleep 1; done'], check=True)
        a.cmdline = subprocess.run([a.vessel, 'boot', '--kernel', a.kernel, '--print-cmdline'],
                                   check=True, capture_output=True, text=True).stdout.strip()
        if a.uffd:
            print('| guest RAM | restore | wall to first instruction | VMM to first instruction | '
                  'wall until the guest read its busybox | prefetch: pages, ioctls, read + install |')
            print('|---|---|---|---|---|---|')
            for mem in [int(s) for s in a.sizes.split(',')]:
                us = []
                for i in range(a.runs):
                    us.append(vessel_uffd_round(a, work, mem, i))
                    print(f'# {mem} MiB run {i}: {us[-1]}', file=sys.stderr, flush=True)
                m = lambda name, k: statistics.median(u[name][k] for u in us)
                for name, _ in UFFD_MODES:
                    pre = (f'{m(name, "pages"):.0f}, {m(name, "runs"):.0f}, '
                           f'{m(name, "read_ms"):.1f} + {m(name, "install_ms"):.1f} ms'
                           if name == 'uffd-prefetch' else '-')
                    print(f'| {mem} MiB | {name} | {m(name, "first_ms"):.1f} ms | '
                          f'{m(name, "vmm_ms"):.1f} ms | {m(name, "tick_ms"):.1f} ms | {pre} |')
                lazy = m('lazy', 'tick_ms')
                print(f'| {mem} MiB | ratios to lazy (guest read) | | | record '
                      f'{m("uffd-record", "tick_ms")/lazy:.2f}x, prefetch '
                      f'{m("uffd-prefetch", "tick_ms")/lazy:.2f}x | working set '
                      f'{statistics.median(u["ws_size"] for u in us)/2**20:.1f} MiB |', flush=True)
            return
        if a.diff:
            print('| guest RAM | full: create / size | diff 1 s later: create / size | '
                  'restore of the diff: wall / VMM (median) |')
            print('|---|---|---|---|')
            for mem in [int(s) for s in a.sizes.split(',')]:
                ds = []
                for i in range(a.runs):
                    ds.append(vessel_diff_round(a, work, mem, i))
                    print(f'# {mem} MiB run {i}: {ds[-1]}', file=sys.stderr, flush=True)
                print(f'| {mem} MiB | {med(ds,"full_create_ms"):.1f} ms / '
                      f'{med(ds,"full_size")/2**20:.1f} MiB | {med(ds,"diff_create_ms"):.1f} ms / '
                      f'{med(ds,"diff_size")/2**20:.2f} MiB | {med(ds,"restore_wall_ms"):.1f} / '
                      f'{med(ds,"restore_vmm_ms"):.1f} ms |', flush=True)
            return
        print('| guest RAM | VMM | create (median) | size on disk | restore, wall to first '
              'instruction / running (median) | restore, VMM time (median) |')
        print('|---|---|---|---|---|---|')
        for mem in [int(s) for s in a.sizes.split(',')]:
            vs, qs = [], []
            for i in range(a.runs):
                vs.append(vessel_round(a, work, mem, i))
                if not a.no_qemu:
                    qs.append(qemu_round(a, work, mem, i))
                print(f'# {mem} MiB run {i}: vessel {vs[-1]}' +
                      (f' qemu {qs[-1]}' if qs else ''), file=sys.stderr, flush=True)
            print(f'| {mem} MiB | vessel | {med(vs,"create_ms"):.1f} ms | '
                  f'{med(vs,"size")/2**20:.1f} MiB | {med(vs,"restore_wall_ms"):.1f} ms | '
                  f'{med(vs,"restore_vmm_ms"):.2f} ms (apply {med(vs,"apply_ms"):.2f} ms) |')
            if qs:
                print(f'| {mem} MiB | QEMU | {med(qs,"create_ms"):.1f} ms | '
                      f'{med(qs,"size")/2**20:.1f} MiB | {med(qs,"restore_wall_ms"):.1f} ms | - |')
                print(f'| {mem} MiB | QEMU/vessel | {med(qs,"create_ms")/med(vs,"create_ms"):.2f}x | '
                      f'{med(qs,"size")/med(vs,"size"):.2f}x | '
                      f'{med(qs,"restore_wall_ms")/med(vs,"restore_wall_ms"):.1f}x | |')
            sys.stdout.flush()
    finally:
        shutil.rmtree(work, ignore_errors=True)

if __name__ == '__main__':
    main()
