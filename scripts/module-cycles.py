"""Checks that the crate's modules import each other without cycles.

A module's imports are the paths it names through `crate::`, `super::`, `self::` and its
own child modules (a parent's `pub use child::X` counts); comments and `#[cfg(test)]`
code do not count. Prints each cycle and exits 1 if there is one.

Usage: python3 scripts/module-cycles.py [src]
"""
import os,re,sys
root=sys.argv[1] if len(sys.argv)>1 else 'src'
mods={}
for d,_,fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        p=os.path.join(d,f); rel=os.path.relpath(p,root)[:-3]
        parts=rel.split('/')
        if parts[-1]=='mod': parts=parts[:-1]
        if parts in (['main'],['lib']): parts=[]
        mods['::'.join(parts)]=open(p).read()
names=set(mods)
def resolve(path):
    segs=[x for x in path.split('::') if x]
    for n in range(len(segs),0,-1):
        m='::'.join(segs[:n])
        if m in names: return m
    return None
def expand(prefix, rest):
    # rest begins right after 'prefix::'
    out=[]
    if rest.startswith('{'):
        depth=0; buf=''; items=[]
        for ch in rest[1:]:
            if ch=='{': depth+=1
            if ch=='}':
                if depth==0: items.append(buf); break
                depth-=1
            if ch==',' and depth==0: items.append(buf); buf=''; continue
            buf+=ch
        for it in items:
            it=it.strip()
            if not it or it=='self': out.append(prefix); continue
            seg=re.match(r'[\w:]*',it).group(0).rstrip(':')
            out.append(prefix+'::'+seg)
    else:
        seg=re.match(r'[\w:]*',rest).group(0).rstrip(':')
        out.append(prefix+'::'+seg if seg else prefix)
    return out
edges={m:set() for m in mods}
for m,src in mods.items():
    src=re.sub(r'//.*','',src)
    src=re.split(r'#\[cfg\(test\)\]',src)[0]
    parent='::'.join(m.split('::')[:-1])
    heads={'crate':''}
    heads['super']=parent
    heads['self']=m
    for n in names:
        if n.startswith(m+'::' if m else '') and n!=m and '::' not in n[len(m)+2 if m else 0:]:
            heads[n.split('::')[-1]]=n
    for h,full in heads.items():
        for mt in re.finditer(r'(?<![\w:])'+h+r'::',src):
            for t in expand(full, src[mt.end():mt.end()+400]):
                r=resolve(t)
                if r is not None and r!=m and r!='': edges[m].add(r)
idx={};low={};st=[];on=set();sccs=[];c=[0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        if len(comp)>1: sccs.append(comp)
for v in sorted(edges):
    if v not in idx: sc(v)
for s in sccs:
    print('CYCLE:',sorted(s))
    for a in sorted(s):
        print('  ',a,'->',sorted(edges[a]&set(s)))
if not sccs: print('module imports form a DAG')
sys.exit(1 if sccs else 0)
