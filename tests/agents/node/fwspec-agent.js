#!/usr/bin/env node
// SPDX-License-Identifier: GPL-2.0-only
//
// A kvm-fwspec agent in JavaScript, written from docs/agent-protocol.md alone.
//
// It speaks kvm-fwspec-agent/2 (hex strings) or /1 (JSON integers) to the suite on
// stdin/stdout, and answers each `run` by forwarding the programs to a reference agent it
// starts as a child (`kvm-fwspec agent --kernel K --host H`), to which it always speaks
// version 1. Every 64-bit number therefore crosses a hex-string/integer boundary; integers
// are parsed exactly (as BigInt) by the small JSON reader below, since JSON.parse rounds
// anything above 2^53. Only Node's standard library is used.
//
// Usage: node fwspec-agent.js [--kernel K] [--host H] [--arch A] [--child CMD] [--wrong]
//                             [--only-v1]
//   --child CMD  how to start kvm-fwspec (default "kvm-fwspec"); split on blanks, with
//                single and double quotes and backslashes as in a POSIX shell
//   --wrong      deliberately non-conforming: a GET of SMCCC_ARCH_WORKAROUND_1 answers 0
//   --only-v1    answer every hello with kvm-fwspec-agent/1, as an agent written before
//                version 2 does (so the suite speaks version 1 to it)
"use strict";

const { spawn } = require("node:child_process");

const V1 = "kvm-fwspec-agent/1";
const V2 = "kvm-fwspec-agent/2";
const WORKAROUND_1 = 0x6030000000140001n;
const U64_MAX = (1n << 64n) - 1n;
const MAX_DEPTH = 256;

function log(text) {
  process.stderr.write(`fwspec-agent.js: ${text}\n`);
}

// ---------------------------------------------------------------------------------------
// JSON with exact integers: an integer literal becomes a BigInt, any other number a Number.

class JsonError extends Error {}

function parseJson(text) {
  let pos = 0;
  const fail = (why) => {
    throw new JsonError(`${why} at character ${pos}`);
  };
  const skipBlanks = () => {
    while (pos < text.length && " \t\r\n".includes(text[pos])) pos += 1;
  };
  const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
  const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;

  function value(depth) {
    if (depth > MAX_DEPTH) fail("nested too deeply");
    skipBlanks();
    const c = text[pos];
    if (c === "{") return object(depth);
    if (c === "[") return array(depth);
    if (c === '"') return string();
    for (const [word, result] of [["true", true], ["false", false], ["null", null]]) {
      if (text.startsWith(word, pos)) {
        pos += word.length;
        return result;
      }
    }
    NUMBER.lastIndex = pos;
    const m = NUMBER.exec(text);
    if (m === null) fail("expected a JSON value");
    pos += m[0].length;
    return m[1] === undefined && m[2] === undefined ? BigInt(m[0]) : Number(m[0]);
  }

  function string() {
    STRING.lastIndex = pos;
    const m = STRING.exec(text);
    if (m === null) fail("malformed string");
    pos += m[0].length;
    return JSON.parse(m[0]);
  }

  function object(depth) {
    const result = {};
    pos += 1;
    skipBlanks();
    if (text[pos] === "}") {
      pos += 1;
      return result;
    }
    for (;;) {
      skipBlanks();
      if (text[pos] !== '"') fail("expected a key");
      const key = string();
      skipBlanks();
      if (text[pos] !== ":") fail("expected ':'");
      pos += 1;
      // defineProperty, not assignment: a key "__proto__" stays an ordinary key.
      Object.defineProperty(result, key, {
        value: value(depth + 1),
        enumerable: true,
        writable: true,
        configurable: true,
      });
      skipBlanks();
      if (text[pos] === ",") {
        pos += 1;
      } else if (text[pos] === "}") {
        pos += 1;
        return result;
      } else {
        fail("expected ',' or '}'");
      }
    }
  }

  function array(depth) {
    const result = [];
    pos += 1;
    skipBlanks();
    if (text[pos] === "]") {
      pos += 1;
      return result;
    }
    for (;;) {
      result.push(value(depth + 1));
      skipBlanks();
      if (text[pos] === ",") {
        pos += 1;
      } else if (text[pos] === "]") {
        pos += 1;
        return result;
      } else {
        fail("expected ',' or ']'");
      }
    }
  }

  const result = value(0);
  skipBlanks();
  if (pos !== text.length) fail("unexpected text after the JSON value");
  return result;
}

function toJson(v) {
  if (typeof v === "bigint") return v.toString();
  if (v === null || typeof v !== "object") return JSON.stringify(v) ?? "null";
  if (Array.isArray(v)) return `[${v.map(toJson).join(",")}]`;
  return `{${Object.keys(v)
    .map((k) => `${JSON.stringify(k)}:${toJson(v[k])}`)
    .join(",")}}`;
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const has = (o, k) => Object.prototype.hasOwnProperty.call(o, k);

// ---------------------------------------------------------------------------------------
// Numbers between the wire versions.

const HEX = /^0x[0-9a-fA-F]{1,16}$/;

class RequestError extends Error {}

/** A v2 hex string as an exact unsigned 64-bit BigInt. */
function fromHex(text, where) {
  if (typeof text !== "string" || !HEX.test(text)) {
    throw new RequestError(`${where}: ${toJson(text)} is not a hex string such as "0x1f"`);
  }
  return BigInt(text);
}

const toHex = (n) => `0x${n.toString(16)}`;

/** x0 is signed: write a negative value as "-0x..." (the client also reads raw bits). */
function toSignedHex(n) {
  const signed = BigInt.asIntN(64, n);
  return signed < 0n ? `-0x${(-signed).toString(16)}` : toHex(signed);
}

// The fields of a step that carry 64-bit numbers, and how each is written.
const STEP_NUMBERS = [
  "reg",
  "value",
  "mask",
  "match",
  "function",
  "answer",
  "base",
  "nr-functions",
  "action",
  "pad",
  "group",
  "attr",
  "cap",
];
// The fields of an outcome that carry unsigned 64-bit numbers (x0 is signed, ids a list;
// x1-x3 are the rest of a call's answer when its step asks for "results" above 1). A step's
// "results" is a plain JSON integer in both versions, like "vcpu", so it is not converted.
const OUTCOME_NUMBERS = ["value", "hypercall", "hypercall-flags", "x1", "x2", "x3", "flags"];

/** A v2 program as v1: the same object with its hex strings turned into BigInts. */
function programToV1(program, p) {
  if (!isObject(program)) throw new RequestError(`programs[${p}] is not an object`);
  if (!Array.isArray(program.steps)) return program; // the child reports it
  const steps = program.steps.map((step, s) => {
    if (!isObject(step)) return step;
    const where = `programs[${p}].steps[${s}]`;
    const out = { ...step };
    for (const key of STEP_NUMBERS) {
      if (has(step, key)) out[key] = fromHex(step[key], `${where}.${key}`);
    }
    if (has(step, "args")) {
      if (!Array.isArray(step.args)) throw new RequestError(`${where}.args is not an array`);
      out.args = step.args.map((a, i) => fromHex(a, `${where}.args[${i}]`));
    }
    return out;
  });
  return { ...program, steps };
}

/** A v1 outcome as v2: its integers written as hex strings. */
function outcomeToV2(outcome) {
  if (!isObject(outcome)) return outcome;
  const out = { ...outcome };
  const inU64 = (n) => typeof n === "bigint" && n >= 0n && n <= U64_MAX;
  try {
    for (const key of OUTCOME_NUMBERS) {
      if (!has(out, key)) continue;
      if (!inU64(out[key])) throw new Error(`${key} ${toJson(out[key])}`);
      out[key] = toHex(out[key]);
    }
    if (has(out, "ids")) {
      if (!Array.isArray(out.ids) || !out.ids.every(inU64)) {
        throw new Error(`ids ${toJson(out.ids)}`);
      }
      out.ids = out.ids.map(toHex);
    }
    if (has(out, "x0")) {
      const x0 = out.x0;
      if (typeof x0 !== "bigint" || x0 < -(1n << 63n) || x0 > U64_MAX) {
        throw new Error(`x0 ${toJson(x0)}`);
      }
      out.x0 = toSignedHex(x0);
    }
  } catch (e) {
    return { error: `the reference agent answered a number out of range: ${e.message}` };
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// The child: a reference agent spoken to in version 1.

/** Split a command line as a POSIX shell would (quotes and backslashes; no expansion). */
function splitCommand(line) {
  const words = [];
  let word = null;
  for (let i = 0; i < line.length; i += 1) {
    const c = line[i];
    if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new Error(`unbalanced ' in ${line}`);
      word = (word ?? "") + line.slice(i + 1, end);
      i = end;
    } else if (c === '"') {
      word = word ?? "";
      for (i += 1; i < line.length && line[i] !== '"'; i += 1) {
        if (line[i] === "\\" && '"\\$`'.includes(line[i + 1])) i += 1;
        word += line[i];
      }
      if (i >= line.length) throw new Error(`unbalanced " in ${line}`);
    } else if (c === "\\") {
      i += 1;
      word = (word ?? "") + (line[i] ?? "");
    } else if (" \t\n".includes(c)) {
      if (word !== null) words.push(word);
      word = null;
    } else {
      word = (word ?? "") + c;
    }
  }
  if (word !== null) words.push(word);
  if (words.length === 0) throw new Error("the --child command is empty");
  return words;
}

class Child {
  constructor(argv) {
    this.argv = argv;
    this.nextId = 1;
    this.pending = new Map();
    this.stderrTail = [];
    this.closedReason = null;
    this.proc = spawn(argv[0], argv.slice(1), { stdio: ["pipe", "pipe", "pipe"] });
    this.proc.on("error", (e) => this.closed(`cannot start ${argv[0]}: ${e.message}`));
    this.proc.on("close", (code, signal) => {
      const status = code === null ? `signal ${signal}` : `status ${code}`;
      const tail = this.stderrTail.join(" | ");
      this.closed(`the reference agent exited with ${status}${tail ? `: ${tail}` : ""}`);
    });
    this.proc.stdin.on("error", () => {}); // an EPIPE shows up as "close" above
    lines(this.proc.stdout, (line) => this.answer(line));
    lines(this.proc.stderr, (line) => {
      process.stderr.write(`[reference] ${line}\n`);
      this.stderrTail.push(line);
      if (this.stderrTail.length > 5) this.stderrTail.shift();
    });
  }

  closed(reason) {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    for (const { reject } of this.pending.values()) reject(new Error(reason));
    this.pending.clear();
  }

  answer(line) {
    if (line.trim() === "") return;
    let response;
    try {
      response = parseJson(line);
    } catch (e) {
      log(`ignoring an unparsable answer from the reference agent: ${e.message}`);
      return;
    }
    const id = isObject(response) && typeof response.id === "bigint" ? response.id : null;
    const waiter = id === null ? undefined : this.pending.get(id);
    if (waiter === undefined) {
      log(`ignoring an answer to no request: ${line}`);
      return;
    }
    this.pending.delete(id);
    waiter.resolve(response);
  }

  /** Send one request; resolves to the response object, rejects if the child is gone. */
  request(method, params) {
    if (this.closedReason !== null) return Promise.reject(new Error(this.closedReason));
    const id = BigInt(this.nextId++);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.proc.stdin.write(`${toJson({ id, method, params })}\n`);
    });
  }

  /** Greet it in version 1; resolves to its hello result. */
  async hello() {
    const response = await this.request("hello", { protocol: V1 });
    if (!isObject(response.result)) {
      throw new Error(`the reference agent refused hello: ${toJson(response.error)}`);
    }
    if (response.result.protocol !== V1) {
      throw new Error(`the reference agent speaks ${toJson(response.result.protocol)}, not ${V1}`);
    }
    return response.result;
  }

  /** End its input and wait for it to exit. */
  stop() {
    if (this.closedReason !== null) return Promise.resolve();
    return new Promise((resolve) => {
      this.proc.on("close", () => resolve());
      this.proc.stdin.end();
    });
  }
}

/** Call onLine for each \n-ended line of a byte stream (and a last unended one). */
function lines(stream, onLine, onEnd) {
  let buffered = Buffer.alloc(0);
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const emit = (bytes) => {
    let text;
    try {
      text = decoder.decode(bytes);
    } catch {
      text = null; // not UTF-8: the caller answers it as unparsable
    }
    onLine(text);
  };
  stream.on("data", (chunk) => {
    buffered = Buffer.concat([buffered, chunk]);
    let nl;
    while ((nl = buffered.indexOf(0x0a)) >= 0) {
      emit(buffered.subarray(0, nl));
      buffered = buffered.subarray(nl + 1);
    }
  });
  stream.on("end", () => {
    if (buffered.length > 0) emit(buffered);
    if (onEnd) onEnd();
  });
}

// ---------------------------------------------------------------------------------------
// The agent.

class Agent {
  constructor(options) {
    this.options = options;
    this.version = V1; // until a hello settles it
    this.child = null;
    this.childHello = null;
  }

  send(message) {
    process.stdout.write(`${toJson(message)}\n`);
  }

  /** A running child that has completed its hello (started afresh after a crash). */
  async ensureChild() {
    if (this.child !== null && this.child.closedReason === null) return this.child;
    const o = this.options;
    const argv = [...o.child, "agent", "--host", o.host, "--arch", o.arch];
    if (o.kernel !== null) argv.push("--kernel", o.kernel); // else the newest release
    this.child = new Child(argv);
    this.childHello = await this.child.hello();
    return this.child;
  }

  /** Handle one line of input; resolves to false once the session is over (bye). */
  async handle(line) {
    if (line !== null && line.trim() === "") return true;
    let request;
    try {
      if (line === null) throw new JsonError("the line is not UTF-8");
      request = parseJson(line);
      if (!isObject(request)) throw new JsonError("the request is not a JSON object");
      if (typeof request.id !== "bigint") throw new JsonError("the request's id is not an integer");
    } catch (e) {
      this.send({ id: null, error: { message: `malformed request: ${e.message}` } });
      return true;
    }
    const { id, method } = request;
    const params = has(request, "params") ? request.params : {};
    try {
      if (!isObject(params)) throw new RequestError("params is not an object");
      if (method === "hello") {
        this.send({ id, result: await this.hello(params) });
      } else if (method === "run") {
        this.send({ id, result: await this.run(params) });
      } else if (method === "bye") {
        this.send({ id, result: {} });
        return false;
      } else {
        throw new RequestError(`unknown method ${toJson(method)}`);
      }
    } catch (e) {
      if (!(e instanceof RequestError)) log(`request ${id}: ${e.message}`);
      this.send({ id, error: { message: e.message } });
    }
    return true;
  }

  async hello(params) {
    const offered = params.protocol;
    if (has(params, "protocol") && typeof offered !== "string") {
      throw new RequestError("params.protocol is not a string");
    }
    // An offered /1, or no protocol at all (an old client), gets /1; anything else /2,
    // unless this agent plays one written before version 2 (--only-v1).
    const old = offered === undefined || offered === V1 || this.options.onlyV1;
    this.version = old ? V1 : V2;
    await this.ensureChild();
    const theirs = this.childHello;
    const result = {
      protocol: this.version,
      implementation: `fwspec-agent.js proxy over ${theirs.implementation ?? "unknown"}${
        this.options.wrong ? " (--wrong)" : ""
      }`,
      kernel: theirs.kernel ?? null,
      arch: theirs.arch ?? "arm64",
      features: theirs.features ?? [],
    };
    if (has(theirs, "host-levels")) result["host-levels"] = theirs["host-levels"];
    return result;
  }

  async run(params) {
    if (!Array.isArray(params.programs)) throw new RequestError("params.programs is not an array");
    const programs = this.version === V2 ? params.programs.map(programToV1) : params.programs;
    let response;
    try {
      const child = await this.ensureChild();
      response = await child.request("run", { programs });
    } catch (e) {
      // The implementation crashed: every step is an error, as the protocol's Faults say.
      return { observed: programs.map((p) => crashed(p, e.message)) };
    }
    if (!isObject(response.result)) {
      const message = isObject(response.error) ? response.error.message : undefined;
      throw new RequestError(typeof message === "string" ? message : "the reference agent failed");
    }
    const result = { ...response.result };
    if (Array.isArray(result.observed)) {
      result.observed = result.observed.map((outcomes, p) => {
        if (!Array.isArray(outcomes)) return outcomes;
        const program = programs[p];
        const steps = isObject(program) && Array.isArray(program.steps) ? program.steps : [];
        return outcomes.map((outcome, s) => {
          const bent = this.options.wrong ? corrupt(steps[s], outcome) : outcome;
          return this.version === V2 ? outcomeToV2(bent) : bent;
        });
      });
    }
    return result;
  }

  async shutdown() {
    if (this.child !== null) await this.child.stop();
  }
}

function crashed(program, reason) {
  const count = isObject(program) && Array.isArray(program.steps) ? program.steps.length : 1;
  return Array.from({ length: Math.max(count, 1) }, (_, s) =>
    s === 0 ? { error: reason } : { error: "not run" },
  );
}

/** --wrong: a GET of SMCCC_ARCH_WORKAROUND_1 answers 0 whatever the implementation read. */
function corrupt(step, outcome) {
  if (isObject(step) && step.op === "get" && step.reg === WORKAROUND_1 && isObject(outcome)) {
    if (has(outcome, "value")) return { ...outcome, value: 0n };
  }
  return outcome;
}

function parseArgs(argv) {
  const options = {
    kernel: null,
    host: "mitigated",
    arch: "arm64",
    child: ["kvm-fwspec"],
    wrong: false,
    onlyV1: false,
  };
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    const takesValue = ["--kernel", "--host", "--arch", "--child"].includes(flag);
    if (flag === "--wrong") {
      options.wrong = true;
    } else if (flag === "--only-v1") {
      options.onlyV1 = true;
    } else if (takesValue && i + 1 < argv.length) {
      const value = argv[++i];
      if (flag === "--child") options.child = splitCommand(value);
      else options[flag.slice(2)] = value;
    } else {
      throw new Error(takesValue ? `${flag} needs a value` : `unknown option ${flag}`);
    }
  }
  return options;
}

async function main() {
  let options;
  try {
    options = parseArgs(process.argv.slice(2));
  } catch (e) {
    log(e.message);
    process.exit(2);
  }
  const agent = new Agent(options);
  // Start the implementation before serving, so that one that cannot start is this agent's
  // one-line reason and exit status, which the suite quotes.
  try {
    await agent.ensureChild();
  } catch (e) {
    log(`FATAL: ${e.message}`);
    process.exit(1);
  }

  // Requests are answered one at a time, in order; input is read ahead into this queue.
  const queue = [];
  let ended = false;
  let wake = null;
  const poke = () => {
    if (wake !== null) {
      const w = wake;
      wake = null;
      w();
    }
  };
  lines(
    process.stdin,
    (line) => {
      queue.push(line);
      poke();
    },
    () => {
      ended = true;
      poke();
    },
  );
  for (;;) {
    if (queue.length === 0) {
      if (ended) break;
      await new Promise((resolve) => {
        wake = resolve;
      });
      continue;
    }
    if (!(await agent.handle(queue.shift()))) break; // bye
  }
  await agent.shutdown();
  process.exit(0);
}

main();
