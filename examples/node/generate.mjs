#!/usr/bin/env node
// Create a generation through the genqueue HTTP gateway, long-poll until it ends, print it.
//
//   GENQUEUE_GATEWAY_URL=http://127.0.0.1:8000 GENQUEUE_API_KEY=key-1 \
//     node examples/node/generate.mjs "a paper boat on a canal"
//
// Node >= 18 (built-in fetch); no npm packages. Environment:
//   GENQUEUE_GATEWAY_URL  the gateway (default http://127.0.0.1:8000)
//   GENQUEUE_API_KEY      a key from the gateway's GENQUEUE_API_KEYS (required)
//   GENQUEUE_MODEL        default minimax/video-01-director
//   GENQUEUE_TIMEOUT_S    give up waiting after this many seconds (default 900)
//   IDEMPOTENCY_KEY       default: a fresh UUID. Re-running with the same key buys nothing
//                         new: the gateway answers with the generation that key already made.
//
// Prints the final record as JSON on stdout (progress goes to stderr). Exit codes: 0 completed;
// 1 failed, cancelled, expired, timed out or an HTTP error; 2 misconfigured.

import { randomUUID } from "node:crypto";

const TERMINAL = new Set(["completed", "failed", "cancelled", "expired"]);
const WAIT_S = 30; // per long-poll; the gateway allows up to 60

const base = (process.env.GENQUEUE_GATEWAY_URL || "http://127.0.0.1:8000").replace(/\/+$/, "");
const apiKey = process.env.GENQUEUE_API_KEY;
const model = process.env.GENQUEUE_MODEL || "minimax/video-01-director";
const timeoutS = Number(process.env.GENQUEUE_TIMEOUT_S || 900);
const idempotencyKey = process.env.IDEMPOTENCY_KEY || `node-${randomUUID()}`;
const prompt = process.argv[2] || "a paper boat on a canal";

const log = (...args) => console.error("[generate]", ...args);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class HttpError extends Error {
  constructor(status, body) {
    const detail = body?.error?.message ?? JSON.stringify(body);
    const fields = (body?.error?.fields ?? []).map((f) => `${f.field}: ${f.message}`);
    super(`HTTP ${status}: ${detail}${fields.length ? ` (${fields.join("; ")})` : ""}`);
    this.status = status;
  }
}

// One call to the gateway. Transient failures (network errors, 429, 5xx) are retried with
// backoff: safe for GET, and for the POST too because it carries an Idempotency-Key, so a
// retried create never makes a second video.
async function api(method, path, { body, headers = {}, timeoutMs = 15_000 } = {}) {
  for (let attempt = 1; ; attempt++) {
    let response;
    try {
      response = await fetch(`${base}${path}`, {
        method,
        headers: {
          Authorization: `Bearer ${apiKey}`,
          Accept: "application/json",
          ...(body === undefined ? {} : { "Content-Type": "application/json" }),
          ...headers,
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      if (attempt >= 5) throw err;
      log(`${method} ${path}: ${err.cause?.code ?? err.name}; retrying`);
      await sleep(500 * 2 ** attempt);
      continue;
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = { error: { message: text.slice(0, 200) } }; // e.g. an HTML page from a proxy
    }
    if (response.ok) return { status: response.status, headers: response.headers, data };
    const transient = response.status === 429 || response.status >= 500;
    if (!transient || attempt >= 5) throw new HttpError(response.status, data);
    const retryAfter = Number(response.headers.get("retry-after")) || 2 ** attempt;
    log(`${method} ${path}: HTTP ${response.status}; retrying in ${retryAfter} s`);
    await sleep(retryAfter * 1000);
  }
}

async function main() {
  if (!apiKey) {
    log("set GENQUEUE_API_KEY to one of the gateway's GENQUEUE_API_KEYS");
    return 2;
  }
  const created = await api("POST", "/v1/generations", {
    body: { model, prompt, metadata: { source: "node-example" } },
    headers: { "Idempotency-Key": idempotencyKey },
  });
  let record = created.data;
  log(`created ${record.id} (${created.status}, Location: ${created.headers.get("location")})`);

  const giveUpAt = Date.now() + timeoutS * 1000;
  while (!TERMINAL.has(record.status)) {
    const left = Math.ceil((giveUpAt - Date.now()) / 1000);
    if (left <= 0) {
      log(`still ${record.status} after ${timeoutS} s; giving up (it keeps running)`);
      console.log(JSON.stringify(record, null, 2));
      return 1;
    }
    const wait = Math.min(WAIT_S, left);
    // The gateway answers 200 as soon as the generation ends, or after `wait` s with the
    // record as it is: look at `status` and ask again.
    const got = await api("GET", `/v1/generations/${encodeURIComponent(record.id)}?wait=${wait}`, {
      timeoutMs: (wait + 15) * 1000,
    });
    record = got.data;
    log(`${record.id}: ${record.status} (${record.polls} upstream polls)`);
  }

  console.log(JSON.stringify(record, null, 2));
  if (record.status !== "completed") {
    log(`generation ${record.status}: ${record.error ?? "no error given"}`);
    return 1;
  }
  log(`done: ${record.video_url} cost $${record.cost_usd}`);
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    log(err.message ?? err);
    process.exitCode = 1;
  },
);
