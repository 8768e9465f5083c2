// Benchmark peer: the classic Cloud Foundry session demo, an Express 4 visit counter with
// express-session and connect-redis over node-redis. It follows the contract in
// ci/bench/peers/README.md.
//
// Environment: PORT (3000), REDIS_URL (redis://127.0.0.1:6379), SESSION_SECRET, and
// WORKERS (1): with more than one, node:cluster forks that many workers sharing the port.
'use strict';

const cluster = require('node:cluster');
const express = require('express');
const session = require('express-session');
const { RedisStore } = require('connect-redis');
const { createClient } = require('redis');

const PORT = Number(process.env.PORT || 3000);
const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
// The same development secret as the actix peer's, so either runs with no setup.
const SECRET = process.env.SESSION_SECRET || 'bench-peer-development-secret-not-for-production';
const WORKERS = Number(process.env.WORKERS || 1);
const TTL_SECONDS = 1800;

if (!Number.isInteger(WORKERS) || WORKERS < 1) {
  console.error(`peer-express: WORKERS must be a positive integer, got ${process.env.WORKERS}`);
  process.exit(1);
}

if (WORKERS > 1 && cluster.isPrimary) {
  // The primary only hands out connections (round-robin, Node's default on Linux).
  for (let i = 0; i < WORKERS; i += 1) cluster.fork();
  let stopping = false;
  cluster.on('exit', (worker, code) => {
    if (!stopping) {
      console.error(`peer-express: worker ${worker.process.pid} exited with ${code}; stopping`);
      process.exit(1);
    }
  });
  const stop = () => {
    stopping = true;
    for (const worker of Object.values(cluster.workers)) worker.kill('SIGTERM');
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  serve().catch((err) => {
    console.error(`peer-express: ${err.stack || err}`);
    process.exit(1);
  });
}

async function serve() {
  const client = createClient({ url: REDIS_URL });
  client.on('error', (err) => console.error(`peer-express: redis: ${err.message}`));
  await client.connect();

  const app = express();
  app.disable('x-powered-by');

  // Before the session middleware, so a health check sends no Redis command and no cookie.
  app.get('/health', (req, res) => res.type('text/plain').send('ok'));

  app.use(
    session({
      store: new RedisStore({ client, prefix: 'sess:', ttl: TTL_SECONDS }),
      secret: SECRET,
      resave: false,
      saveUninitialized: false,
      cookie: { maxAge: TTL_SECONDS * 1000, httpOnly: true, sameSite: 'lax', secure: false },
    }),
  );

  const countVisit = (req) => {
    req.session.views = (req.session.views || 0) + 1;
    return req.session.views;
  };

  app.get('/', (req, res) => {
    const views = countVisit(req);
    res.type('html').send(`<!doctype html><title>Visits</title><p>Visits: ${views}</p>\n`);
  });

  app.get('/api/session', (req, res) => {
    res.json({ visits: countVisit(req) });
  });

  const server = app.listen(PORT, () => {
    console.log(`peer-express: pid ${process.pid} listening on :${PORT}`);
  });
  const stop = () => {
    server.close(() => client.quit().finally(() => process.exit(0)));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
