import { chmod, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { letheNodeFlags } from '../../../bench/lethe-phase.ts';
import { parseConfig, type Config } from '../../../src/config/index.ts';
import { readMasterKeyFile, writeMasterKeyFile } from '../../../src/crypto/master-key-file.ts';
import { DAEMON_JOBS } from '../../../src/vault/index.ts';
import { age, checkLetheArgs, daemonMetrics, isSeriesOf, names, REQUIRED_METRICS, ROOT, sh, standInNode } from './support.ts';

/**
 * Every Kubernetes manifest in jobs/kubernetes, read as the API server reads it (YAML 1.1:
 * `0440` is octal), and held to what a cluster with a restricted Pod Security admission and
 * lethe's own checks need: pods that run as non-root on a read-only root file system with a
 * writable /tmp, resources, images pinned by tag, deadlines on CronJobs, probes on the
 * Deployment, a master key lethe accepts, configs lethe accepts, alert rules on metrics the
 * daemon exports.
 */

interface Mount { name: string; mountPath: string; subPath?: string; readOnly?: boolean }
interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string }[];
  volumeMounts?: Mount[];
  ports?: { name: string; containerPort: number }[];
  securityContext?: { allowPrivilegeEscalation?: boolean; readOnlyRootFilesystem?: boolean; capabilities?: { drop?: string[] } };
  resources?: { requests?: { cpu?: string | number; memory?: string }; limits?: { cpu?: string | number; memory?: string } };
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  startupProbe?: Probe;
}
interface Probe { httpGet?: { path: string; port: string | number }; exec?: { command: string[] } }
interface Volume {
  name: string;
  emptyDir?: { medium?: string; sizeLimit?: string };
  secret?: { secretName: string; defaultMode?: number; items?: { key: string; path: string }[] };
  configMap?: { name: string };
  persistentVolumeClaim?: { claimName: string };
}
interface PodSpec {
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; runAsGroup?: number; fsGroup?: number };
  initContainers?: Container[];
  containers: Container[];
  volumes?: Volume[];
  terminationGracePeriodSeconds?: number;
}
interface Doc {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  // The rest differs by kind; read through the helpers below.
  spec: Record<string, unknown>;
  data?: Record<string, string>;
}
interface Workload { file: string; doc: Doc; pod: PodSpec; labels: Record<string, string> }

const DIR = new URL('jobs/kubernetes/', ROOT);

async function loadAll(): Promise<{ file: string; doc: Doc }[]> {
  const out: { file: string; doc: Doc }[] = [];
  for (const file of (await readdir(DIR)).filter((f) => f.endsWith('.yaml')).sort()) {
    const docs = parseAllDocuments(await readFile(new URL(file, DIR), 'utf8'), { version: '1.1' });
    for (const doc of Array.isArray(docs) ? docs : [docs]) {
      expect(doc.errors, file).toEqual([]);
      out.push({ file, doc: doc.toJS() as Doc });
    }
  }
  return out;
}

function podOf(doc: Doc): { pod: PodSpec; labels: Record<string, string> } | undefined {
  type Template = { metadata?: { labels?: Record<string, string> }; spec: PodSpec };
  let template: Template | undefined;
  if (doc.kind === 'Deployment' || doc.kind === 'Job') template = doc.spec['template'] as Template;
  if (doc.kind === 'CronJob') template = (doc.spec['jobTemplate'] as { spec: { template: Template } }).spec.template;
  return template === undefined ? undefined : { pod: template.spec, labels: template.metadata?.labels ?? {} };
}

const allContainers = (pod: PodSpec): Container[] => [...(pod.initContainers ?? []), ...pod.containers];

/** Whether a container runs lethe (not the master key copy). */
const runsLethe = (c: Container): boolean => [...(c.command ?? []), ...(c.args ?? [])].join(' ').includes('lethe.js') || c.command === undefined;

/** The words after `bin/lethe.js` for each lethe invocation in a container (its args, or the lines of its shell script). */
function letheInvocations(c: Container): { flags: string[]; args: string[] }[] {
  if (c.command === undefined) return [{ flags: letheNodeFlags(), args: c.args ?? [] }];
  const script = (c.args ?? []).join('\n');
  return script
    .split('\n')
    .filter((line) => line.includes('/app/bin/lethe.js'))
    .map((line) => {
      const words = line.trim().replace(/^exec /, '').split(/\s+/);
      const at = words.indexOf('/app/bin/lethe.js');
      expect(words[0], line).toBe('node');
      return { flags: words.slice(1, at), args: words.slice(at + 1).map((w) => w.replace(/^"(.*)"$/, '$1')) };
    });
}

/** Values for every `${NAME}` in a config text, as the Secrets would give them. */
function envFor(text: string): Record<string, string> {
  return Object.fromEntries([...text.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g)].map((m) => [m[1] ?? '', `test-${m[1] ?? ''}`]));
}

describe('jobs/kubernetes', () => {
  let docs: { file: string; doc: Doc }[];
  let workloads: Workload[];
  let configs: Map<string, { text: string; config: Config }>;
  let scratch: string;

  beforeAll(async () => {
    docs = await loadAll();
    workloads = docs.flatMap(({ file, doc }) => {
      const found = podOf(doc);
      return found === undefined ? [] : [{ file, doc, ...found }];
    });
    const configMap = docs.find(({ doc }) => doc.kind === 'ConfigMap' && doc.metadata.name === 'lethe-config')?.doc;
    configs = new Map(
      Object.entries(configMap?.data ?? {}).map(([key, text]) => [key, { text, config: parseConfig(parse(text), '/etc/lethe', envFor(text)) }]),
    );
    scratch = await mkdtemp(join(tmpdir(), 'lethe-k8s-'));
  });
  afterAll(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  it('has the workloads, Service, monitoring and config the docs name', () => {
    const kinds = docs.map(({ doc }) => `${doc.kind}/${doc.metadata.name}`).sort();
    expect(kinds).toEqual(
      expect.arrayContaining([
        'ConfigMap/lethe-config',
        'CronJob/lethe-backup',
        'CronJob/lethe-backup-sharded',
        'CronJob/lethe-keys-export',
        'CronJob/lethe-lifecycle',
        'CronJob/lethe-verify',
        'Deployment/lethe-daemon',
        'PersistentVolumeClaim/lethe-keys-exports',
        'PodDisruptionBudget/lethe-daemon',
        'PrometheusRule/lethe',
        'Service/lethe-daemon',
        'ServiceMonitor/lethe-daemon',
      ]),
    );
    expect(configs.size).toBeGreaterThanOrEqual(4);
  });

  it('runs every pod as a non-root user, with fsGroup wherever a volume must be readable or writable by it', () => {
    expect(workloads.length).toBeGreaterThanOrEqual(6);
    for (const { file, pod } of workloads) {
      expect(pod.securityContext?.runAsNonRoot, file).toBe(true);
      expect(pod.securityContext?.runAsUser, file).toBeGreaterThan(0);
      const needsGroup = (pod.volumes ?? []).some((v) => v.secret !== undefined || v.persistentVolumeClaim !== undefined);
      if (needsGroup) expect(pod.securityContext?.fsGroup, file).toBe(pod.securityContext?.runAsGroup);
    }
  });

  it('gives every container a read-only root, no privilege escalation, no capabilities, and resources', () => {
    for (const { file, pod } of workloads) {
      for (const c of allContainers(pod)) {
        const where = `${file} ${c.name}`;
        expect(c.securityContext?.readOnlyRootFilesystem, where).toBe(true);
        expect(c.securityContext?.allowPrivilegeEscalation, where).toBe(false);
        expect(c.securityContext?.capabilities?.drop, where).toContain('ALL');
        expect(c.resources?.requests?.cpu, where).toBeDefined();
        expect(c.resources?.requests?.memory, where).toMatch(/^\d+(Mi|Gi)$/);
        expect(c.resources?.limits?.memory, where).toMatch(/^\d+(Mi|Gi)$/);
      }
    }
  });

  it('mounts a writable emptyDir on /tmp for every container that runs lethe (verify spools manifests there)', () => {
    for (const { file, pod } of workloads) {
      for (const c of allContainers(pod).filter(runsLethe)) {
        const tmp = c.volumeMounts?.find((m) => m.mountPath === '/tmp');
        expect(tmp, `${file} ${c.name}`).toBeDefined();
        expect(tmp?.readOnly ?? false).toBe(false);
        expect(pod.volumes?.find((v) => v.name === tmp?.name)?.emptyDir, `${file} ${c.name}`).toBeDefined();
      }
    }
  });

  it('pins one image by tag, never :latest', () => {
    const images = new Set(workloads.flatMap(({ pod }) => allContainers(pod).map((c) => c.image)));
    expect(images.size).toBe(1);
    for (const image of images) {
      const tag = /^[a-z0-9.-]+(?::\d+)?\/[a-z0-9/._-]+:([A-Za-z0-9._-]+)$/.exec(image)?.[1];
      expect(tag, image).toBeDefined();
      expect(tag).not.toBe('latest');
      expect(tag).toMatch(/^\d+\.\d+\.\d+/);
    }
  });

  it('gives every CronJob a deadline shorter than its period, no overlap and a bounded history', () => {
    const cronJobs = docs.filter(({ doc }) => doc.kind === 'CronJob');
    expect(cronJobs.length).toBe(5);
    for (const { file, doc } of cronJobs) {
      const spec = doc.spec as { schedule: string; concurrencyPolicy: string; jobTemplate: { spec: { activeDeadlineSeconds?: number } } };
      const deadline = spec.jobTemplate.spec.activeDeadlineSeconds;
      expect(deadline, file).toBeGreaterThan(0);
      expect(spec.concurrencyPolicy, file).toBe('Forbid');
      // Hourly jobs must stop before the next hour; daily ones within the day.
      const [minute, hour] = spec.schedule.split(' ');
      const period = hour === '*' ? 3600 : hour?.startsWith('*/') === true ? Number(hour.slice(2)) * 3600 : 86_400;
      expect(/^\d+$/.test(minute ?? ''), file).toBe(true);
      if (doc.metadata.name !== 'lethe-backup-sharded') expect(deadline ?? Infinity, file).toBeLessThan(period);
    }
  });

  it('runs lethe with core dumps off: through the image entrypoint, or a script that turns them off first', () => {
    let scripts = 0;
    for (const w of workloads) {
      for (const c of allContainers(w.pod).filter(runsLethe)) {
        // No command: the image's ENTRYPOINT, which sets `ulimit -c 0` (dockerfile.test.ts runs it).
        if (c.command === undefined) continue;
        expect(c.command, `${w.file} ${c.name}`).toEqual(['/bin/sh', '-c']);
        const lines = (c.args ?? []).join('\n').split('\n').map((l) => l.trim());
        const off = lines.findIndex((l) => /^ulimit -c 0(\s|$)/.test(l));
        const first = lines.findIndex((l) => l.includes('/app/bin/lethe.js'));
        expect(off, `${w.file} ${c.name}: ulimit -c 0`).toBeGreaterThanOrEqual(0);
        expect(off, `${w.file} ${c.name}: ulimit -c 0 before lethe runs`).toBeLessThan(first);
        scripts++;
      }
    }
    expect(scripts).toBeGreaterThanOrEqual(2);
  });

  it('runs only lethe commands and options that exist, with the heap flags of bin/lethe.js', () => {
    const flags = letheNodeFlags();
    const seen = new Set<string>();
    for (const { file, pod } of workloads) {
      for (const c of allContainers(pod).filter(runsLethe)) {
        const invocations = letheInvocations(c);
        expect(invocations.length, `${file} ${c.name}`).toBeGreaterThan(0);
        for (const { flags: given, args } of invocations) {
          expect(given, `${file} ${c.name}`).toEqual(flags);
          seen.add(checkLetheArgs(args, `${file} ${c.name}`));
        }
      }
    }
    expect([...seen].sort()).toEqual(['backup', 'daemon', 'keys export', 'lifecycle apply', 'verify']);
  });

  it('mounts, for each lethe container, a config from lethe-config that lethe accepts', () => {
    for (const { file, pod } of workloads) {
      for (const c of allContainers(pod).filter(runsLethe)) {
        const env = Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value]));
        const path = env['LETHE_CONFIG'];
        expect(path, `${file} ${c.name}`).toBe('/etc/lethe/lethe.yaml');
        const mount = c.volumeMounts?.find((m) => m.mountPath === path);
        expect(pod.volumes?.find((v) => v.name === mount?.name)?.configMap?.name, `${file} ${c.name}`).toBe('lethe-config');
        expect(configs.has(mount?.subPath ?? ''), `${file} ${c.name}: ${mount?.subPath ?? '(no subPath)'}`).toBe(true);
      }
    }
  });

  describe('the master key', () => {
    const needing = (): Workload[] =>
      workloads.filter(({ pod }) => (pod.volumes ?? []).some((v) => v.secret?.secretName === 'lethe-master-key'));

    it('reaches verify, lifecycle and the daemon only, through an init container and a memory emptyDir', () => {
      expect(needing().map(({ doc }) => doc.metadata.name).sort()).toEqual(['lethe-daemon', 'lethe-lifecycle', 'lethe-verify']);
      for (const { file, pod } of needing()) {
        const secret = pod.volumes?.find((v) => v.secret?.secretName === 'lethe-master-key');
        // The Secret volume is mounted only where the copy is made, never where lethe runs.
        for (const c of pod.containers) expect(c.volumeMounts?.some((m) => m.name === secret?.name), `${file} ${c.name}`).toBe(false);
        const copier = pod.initContainers?.find((c) => c.volumeMounts?.some((m) => m.name === secret?.name));
        expect(copier, file).toBeDefined();
        const keys = copier?.volumeMounts?.find((m) => m.name !== secret?.name);
        expect(pod.volumes?.find((v) => v.name === keys?.name)?.emptyDir?.medium, file).toBe('Memory');
      }
    });

    it('is the file each config names as masterKey.file', () => {
      for (const { file, pod } of needing()) {
        for (const c of pod.containers) {
          const config = configs.get(c.volumeMounts?.find((m) => m.mountPath === '/etc/lethe/lethe.yaml')?.subPath ?? '');
          const keyFile = config?.config.masterKey?.file ?? '';
          const mount = c.volumeMounts?.find((m) => m.mountPath === posix.dirname(keyFile));
          expect(mount, `${file} ${c.name}: nothing mounted at ${posix.dirname(keyFile)}`).toBeDefined();
          expect(mount?.readOnly, file).toBe(true);
          const copier = pod.initContainers?.find((i) => i.volumeMounts?.some((m) => m.name === mount?.name));
          expect((copier?.args ?? []).join(' '), file).toContain(` ${keyFile}`);
        }
      }
    });

    it("as the kubelet writes it (root-owned, 0440 with fsGroup) is refused by lethe; the init container's copy is accepted", async () => {
      const original = join(scratch, 'generated.key');
      await writeMasterKeyFile(original);
      for (const { file, pod } of needing()) {
        const secret = pod.volumes?.find((v) => v.secret?.secretName === 'lethe-master-key');
        expect(secret?.secret?.defaultMode, file).toBe(0o440);
        const copier = pod.initContainers?.find((c) => c.volumeMounts?.some((m) => m.name === secret?.name));
        const secretMount = copier?.volumeMounts?.find((m) => m.name === secret?.name)?.mountPath ?? '';
        const keysMount = copier?.volumeMounts?.find((m) => m.name !== secret?.name)?.mountPath ?? '';
        // The layout of a Secret volume: the file is a symlink into ..data.
        const here = join(scratch, file);
        const secretDir = join(here, 'secret');
        const keysDir = join(here, 'keys');
        await mkdir(join(secretDir, '..data'), { recursive: true });
        await mkdir(keysDir, { recursive: true, mode: 0o777 });
        const item = secret?.secret?.items?.[0]?.path ?? 'master.key';
        await writeFile(join(secretDir, '..data', item), await readFile(original));
        await chmod(join(secretDir, '..data', item), secret?.secret?.defaultMode ?? 0o644);
        await symlink(join('..data', item), join(secretDir, item));
        await expect(readMasterKeyFile(join(secretDir, item))).rejects.toThrow(/accessible by group or others \(mode 0440\)/);

        const script = (copier?.args ?? []).join('\n').replaceAll(secretMount, secretDir).replaceAll(keysMount, keysDir);
        const result = await sh(script, { PATH: '/usr/bin:/bin', HOME: here });
        expect(result, file).toMatchObject({ code: 0, stderr: '' });
        const copied = await readMasterKeyFile(join(keysDir, item));
        expect(copied.identity).toBe((await readMasterKeyFile(original)).identity);
      }
    });
  });

  describe('the keys export', () => {
    const exporters = (): { file: string; c: Container }[] =>
      workloads.flatMap(({ file, pod }) =>
        allContainers(pod)
          .filter((c) => (c.args ?? []).join(' ').includes('keys export'))
          .map((c) => ({ file, c })),
      );

    it('runs after the hourly backup in the same pod, and on its own schedule for the daemon and sharded backups', () => {
      expect(exporters().map(({ file }) => file).sort()).toEqual(['backup-cronjob.yaml', 'keys-export-cronjob.yaml']);
      const backup = workloads.find(({ doc }) => doc.metadata.name === 'lethe-backup');
      expect(backup?.pod.initContainers?.map((c) => c.args?.[0])).toEqual(['backup']);
      expect(backup?.pod.containers.map((c) => c.name)).toEqual(['keys-export']);
    });

    it('uses the verify credentials (the backup role may not read wrapped keys) and no master key', () => {
      for (const { file, c } of exporters()) {
        expect(c.volumeMounts?.find((m) => m.mountPath === '/etc/lethe/lethe.yaml')?.subPath, file).toBe('lethe-verify.yaml');
        expect(c.volumeMounts?.some((m) => m.mountPath.startsWith('/run/lethe/keys')), file).toBe(false);
      }
    });

    it('keeps only whole exports and deletes those older than the grace window', async () => {
      const bin = await standInNode();
      try {
        for (const { file, c } of exporters()) {
          const grace = Number(c.env?.find((e) => e.name === 'GRACE_DAYS')?.value);
          expect(grace, file).toBe(configs.get('lethe-lifecycle.yaml')?.config.retention.graceWindowDays);
          const mount = c.volumeMounts?.find((m) => m.name === 'keys-exports')?.mountPath ?? '';
          const dir = join(scratch, `exports-${file}`);
          await mkdir(dir);
          await writeFile(join(dir, 'keys-20200101T000000Z.json'), '{}');
          await age(join(dir, 'keys-20200101T000000Z.json'), grace + 1);
          await writeFile(join(dir, 'keys-20200102T000000Z.json.partial'), '{');
          await age(join(dir, 'keys-20200102T000000Z.json.partial'), grace + 1);
          await writeFile(join(dir, 'keys-recent.json'), '{}');
          await age(join(dir, 'keys-recent.json'), grace - 1);
          const script = (c.args ?? []).join('\n').replaceAll(mount, dir);
          const env = { PATH: `${bin}:/usr/bin:/bin`, GRACE_DAYS: String(grace) };

          const ok = await sh(script, env);
          expect(ok, file).toMatchObject({ code: 0, stderr: '' });
          const after = await names(dir);
          expect(after, file).toHaveLength(2);
          expect(after).toContain('keys-recent.json');
          const fresh = after.find((n) => n !== 'keys-recent.json') ?? '';
          expect(fresh).toMatch(/^keys-\d{8}T\d{6}Z\.json$/);
          expect(JSON.parse(await readFile(join(dir, fresh), 'utf8'))).toEqual({ format: 'lethe.keys-export.v2' });

          // A failed export leaves no keys-*.json that a recovery would take for the newest.
          await new Promise((r) => setTimeout(r, 1100)); // a new second, so a new name
          const failed = await sh(script, { ...env, KEYS_EXPORT_FAIL: '1' });
          expect(failed.code, file).not.toBe(0);
          expect((await names(dir)).filter((n) => n.endsWith('.json')), file).toEqual(after);
        }
      } finally {
        await rm(bin, { recursive: true, force: true });
      }
    });
  });

  describe('the daemon', () => {
    const daemon = (): Workload => {
      const found = workloads.find(({ doc }) => doc.kind === 'Deployment');
      if (found === undefined) throw new Error('no Deployment');
      return found;
    };
    const container = (): Container => daemon().pod.containers.find((c) => c.args?.[0] === 'daemon') ?? ({} as Container);
    const config = (): Config => {
      const subPath = container().volumeMounts?.find((m) => m.mountPath === '/etc/lethe/lethe.yaml')?.subPath ?? '';
      const found = configs.get(subPath)?.config;
      if (found === undefined) throw new Error(`no config ${subPath}`);
      return found;
    };
    const port = (): number => Number(/:(\d+)$/.exec(config().daemon?.listen ?? '')?.[1]);

    it('runs two replicas that listen where the probes and Prometheus reach them, with a token', () => {
      expect(daemon().doc.spec['replicas']).toBe(2);
      expect(config().daemon?.listen).toMatch(/^0\.0\.0\.0:\d+$/);
      expect(config().daemon?.token).toBeDefined();
      expect(container().ports?.find((p) => p.name === 'http')?.containerPort).toBe(port());
      expect(Object.keys(config().daemon?.schedules ?? {}).sort()).toEqual(['backup', 'lifecycle', 'vaultBackup', 'verify', 'verifyOlder']);
    });

    it('probes liveness on /healthz and readiness on /readyz, the latter with the token from the environment', () => {
      const c = container();
      expect(c.livenessProbe?.httpGet).toEqual({ path: '/healthz', port: 'http' });
      expect(c.startupProbe?.httpGet?.path).toBe('/healthz');
      expect(c.readinessProbe?.exec?.command).toEqual(['node', '/app/bin/lethe-probe.js', `http://127.0.0.1:${port()}/readyz`]);
      expect(configs.get('lethe.yaml')?.text).toContain('token: { value: "${LETHE_DAEMON_TOKEN}" }');
    });

    it('gets more time to stop than the daemon gives its running job', () => {
      expect(daemon().pod.terminationGracePeriodSeconds).toBeGreaterThan(config().daemon?.shutdownSeconds ?? Infinity);
    });

    it('is reached by the Service and scraped by the ServiceMonitor with the token', () => {
      const service = docs.find(({ doc }) => doc.kind === 'Service')?.doc;
      const selector = (service?.spec['selector'] ?? {}) as Record<string, string>;
      expect(daemon().labels).toMatchObject(selector);
      expect(Object.keys(selector).length).toBeGreaterThan(0);
      const ports = service?.spec['ports'] as { name: string; port: number; targetPort: string }[];
      expect(ports).toEqual([expect.objectContaining({ name: 'http', port: port(), targetPort: 'http' })]);

      const monitor = docs.find(({ doc }) => doc.kind === 'ServiceMonitor')?.doc;
      expect(service?.metadata.labels).toMatchObject((monitor?.spec['selector'] as { matchLabels: Record<string, string> }).matchLabels);
      const [endpoint] = monitor?.spec['endpoints'] as { port: string; path: string; honorLabels: boolean; authorization: { type: string; credentials: { name: string } } }[];
      expect(endpoint).toMatchObject({ port: 'http', path: '/metrics', honorLabels: true, authorization: { type: 'Bearer' } });
      // Prometheus gets the token's own Secret, not the one holding the daemon's credentials.
      expect(endpoint?.authorization.credentials.name).not.toBe('lethe-daemon-secrets');
    });
  });

  describe('the PrometheusRule', () => {
    interface Rule { alert: string; expr: string; for: string; labels: { severity: string }; annotations: { runbook_url: string } }
    const rules = (): Rule[] => {
      const rule = docs.find(({ doc }) => doc.kind === 'PrometheusRule')?.doc;
      return (rule?.spec['groups'] as { rules: Rule[] }[]).flatMap((g) => g.rules);
    };

    it('refers only to metrics the daemon exports (and Prometheus’s own `up`)', () => {
      const exported = daemonMetrics();
      for (const name of REQUIRED_METRICS) expect(exported.has(name), name).toBe(true);
      for (const { alert, expr } of rules()) {
        const metrics = [...expr.matchAll(/\b([a-z_][a-z0-9_]*)\s*(?=[{[)\s]|$)/g)].map((m) => m[1] ?? '').filter((n) => n.startsWith('lethe_'));
        if (alert !== 'LetheDaemonDown') expect(metrics.length, alert).toBeGreaterThan(0);
        for (const name of metrics) expect(isSeriesOf(name, exported), `${alert}: ${name}`).toBe(true);
        let depth = 0;
        for (const ch of expr) {
          depth += ch === '(' ? 1 : ch === ')' ? -1 : 0;
          expect(depth, alert).toBeGreaterThanOrEqual(0);
        }
        expect(depth, alert).toBe(0);
      }
    });

    it('alerts on an RPO breach, failed drills, job failures, a broken audit chain and stale successes', () => {
      const byName = new Map(rules().map((r) => [r.alert, r]));
      expect(byName.get('LetheRPOBreached')?.expr).toMatch(/lethe_rpo_seconds\).*>.*lethe_rpo_objective_seconds/);
      expect(byName.get('LetheRestoreDrillFailed')?.expr).toMatch(/lethe_verify_ok\)\s*==\s*0/);
      expect(byName.get('LetheJobFailed')?.expr).toContain('increase(lethe_job_failures_total[');
      expect(byName.get('LetheAuditChainBroken')?.expr).toMatch(/lethe_audit_chain_ok\)\s*==\s*0/);
      expect(byName.get('LetheNoRecentBackup')?.expr).toContain('time() - max(lethe_job_last_success_timestamp_seconds{job="backup"})');
      expect(byName.get('LetheNoRecentDrill')?.expr).toContain('lethe_job_last_success_timestamp_seconds{job="verify"}');
      expect(byName.get('LetheRTOExceeded')?.expr).toMatch(/lethe_rto_seconds\).*>.*lethe_rto_objective_seconds/);
      for (const rule of rules()) expect(['critical', 'warning'], rule.alert).toContain(rule.labels.severity);
      // The job label's values are the daemon's job names.
      for (const { alert, expr } of rules()) {
        for (const m of expr.matchAll(/lethe_[a-z_]+\{job="([^"]+)"\}/g)) expect(DAEMON_JOBS, alert).toContain(m[1]);
      }
    });

    it('links every alert to its section of runbooks/backup-alert.md', async () => {
      const runbook = await readFile(new URL('runbooks/backup-alert.md', ROOT), 'utf8');
      const anchors = new Set([...runbook.matchAll(/^#{2,3} (.+)$/gm)].map((m) => (m[1] ?? '').toLowerCase().replace(/[^a-z0-9 -]/g, '').replace(/ /g, '-')));
      for (const { alert, annotations } of rules()) {
        expect(annotations.runbook_url, alert).toBe(`runbooks/backup-alert.md#${alert.toLowerCase()}`);
        expect(anchors.has(alert.toLowerCase()), `no "## ${alert}" in runbooks/backup-alert.md`).toBe(true);
      }
    });
  });
});
