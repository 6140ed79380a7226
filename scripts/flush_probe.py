#!/usr/bin/env python3
"""How long and how much CPU one durable append of 5 KB costs on this disk, four ways: pwrite +
fdatasync (what the audit writer does), pwritev2(RWF_DSYNC), an O_DSYNC file, and O_DIRECT with
RWF_DSYNC. Run from a directory on the disk in question (it writes ./flushprobe.dat, 64 MiB).
BENCHMARKS.md, session 10."""
import os, mmap, time, sys
def cpu():
    v=[int(x) for x in open('/proc/stat').readline().split()[1:]]
    idle=v[3]+v[4]; return sum(v)-idle, sum(v)
path='flushprobe.dat'
N=3000
size=64<<20
fd=os.open(path, os.O_RDWR|os.O_CREAT, 0o600)
os.ftruncate(fd,0)
z=b'\0'*(1<<20)
for off in range(0,size,1<<20): os.pwrite(fd,z,off)
os.fsync(fd); os.close(fd)
rec=b'x'*5000
def run(name, mode):
    flags=os.O_RDWR
    if mode=='direct': flags|=os.O_DIRECT
    if mode=='dsync': flags|=os.O_DSYNC
    fd=os.open(path, flags)
    buf=mmap.mmap(-1, 16384)
    off=0; lat=[]
    b0,t0=cpu(); s=time.perf_counter()
    for i in range(N):
        a=time.perf_counter()
        if mode=='buffered':
            os.pwrite(fd,rec,off); os.fdatasync(fd)
        elif mode=='rwf':
            os.pwritev(fd,[rec],off,os.RWF_DSYNC)
        elif mode=='dsync':
            os.pwrite(fd,rec,off)
        else:
            # aligned: rewrite from block start of off through end, padded to 4096
            start=off//4096*4096; end=(off+len(rec)+4095)//4096*4096
            buf.seek(0); buf.write(b'x'*(end-start))
            os.pwritev(fd,[memoryview(buf)[:end-start]],start, os.RWF_DSYNC)
        lat.append(time.perf_counter()-a)
        off+=len(rec)
    el=time.perf_counter()-s; b1,t1=cpu()
    lat.sort()
    busy=(b1-b0)/100.0  # core-seconds (USER_HZ=100)
    print(f"{name:9s} {N/el:7.0f}/s p50 {lat[N//2]*1e6:5.0f}us p90 {lat[N*9//10]*1e6:5.0f}us machine busy/flush {busy/N*1e6:5.0f}us")
    os.close(fd)
for r in range(2):
    for m in ['buffered','rwf','dsync','direct']:
        run(m,m)
os.unlink(path)
