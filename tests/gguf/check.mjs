// llama.cpp agreement check of a GGUF written by `moeforge convert --to gguf` (docs/gguf.md).
// Loads the GGUF with node-llama-cpp (llama.cpp's prebuilt CPU libraries) and compares, against
// moeforge on the model directory the GGUF was made from:
//   1. token ids of every text of a text set (llama.cpp with special-token parsing, moeforge's
//      `tokenize` without --add-special: both recognise special-token text as the special token);
//   2. next-token log-probabilities of the scored tokens of a text, window by window exactly as
//      `moeforge perplexity` scores them (the hidden --token-logprobs record): log p(target) and
//      the log-probabilities of moeforge's top-k candidates, within --tol;
//   3. the rolling perplexity, within --ppl-tol (relative).
// Exit status 0 when all agree, 1 otherwise (a "FAIL:" line says what).
//
//   node check.mjs --gguf M.gguf --model DIR --moeforge BIN --outtype f32 \
//       --texts tests/data/tokenizers/vectors/ggml-vocab-llama-bpe.gguf.inp --ppl-text kjv.txt
import {execFile} from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {promisify} from "node:util";

const run = promisify(execFile);

function parseArgs(argv) {
  const a = {threads: 2, context: 256, stride: 128, maxChars: 3000, top: 8, label: "", dtype: ""};
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, "").replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (argv[i + 1] === undefined) throw new Error(`${argv[i]} needs a value`);
    a[k] = argv[i + 1];
  }
  for (const need of ["gguf", "model", "moeforge", "outtype"]) if (!a[need]) throw new Error(`--${need} is required`);
  for (const k of ["threads", "context", "stride", "maxChars", "top"]) a[k] = Number(a[k]);
  // Tolerances per GGUF type: |Δ log p| per position and relative perplexity difference. f32 must
  // agree at every position; for 16-bit and 8-bit weights llama.cpp also rounds the activations
  // it multiplies them with (moeforge's bf16 runtime rounds differently), so there the bound is
  // on the 99th percentile of |Δ| over the positions, and the maximum may be 5x that.
  const tol = {f32: [1e-3, 1e-3], f16: [2e-2, 1e-2], bf16: [2e-2, 1e-2], q8_0: [0.1, 1e-2]}[a.outtype];
  a.quantile = a.outtype === "f32" ? 1.0 : 0.99;
  if (!tol) throw new Error(`--outtype ${a.outtype}: expected f32, f16, bf16 or q8_0`);
  a.tol = a.tol !== undefined ? Number(a.tol) : tol[0];
  a.pplTol = a.pplTol !== undefined ? Number(a.pplTol) : tol[1];
  // moeforge's side computes in fp32 (the reference) unless --dtype says otherwise.
  if (!a.dtype) a.dtype = "float32";
  a.label = a.label || path.basename(a.gguf);
  return a;
}

// A text set (--texts a,b,...): JSON arrays of strings, or llama.cpp's tokenizer-test .inp format
// (texts each followed by "\n__ggml_vocab_test__\n").
function readTexts(file) {
  const raw = fs.readFileSync(file, "utf8");
  if (file.endsWith(".json")) return JSON.parse(raw);
  const parts = raw.split("\n__ggml_vocab_test__\n");
  if (parts[parts.length - 1] === "") parts.pop();
  return parts;
}

async function pool(items, n, fn) {
  const out = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({length: n}, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  }));
  return out;
}

// next: llama.cpp's output for one position with the logits of the asked-for tokens plus the top
// one (so the maximum logit is among them) and totalLogitWeight = sum over the vocabulary of
// exp(logit - max logit): log p(t) = logit(t) - max - log(totalLogitWeight).
function logProbs(next, tokens) {
  let max = -Infinity, argmax = -1;
  for (const [t, v] of next.logits) if (v > max) { max = v; argmax = t; }
  const lse = max + Math.log(next.totalLogitWeight);
  return {argmax, lp: tokens.map((t) => (next.logits.has(t) ? next.logits.get(t) - lse : NaN))};
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "moeforge-gguf-check-"));
  const failures = [];
  try {
    const {getLlama, LlamaLogLevel} = await import("node-llama-cpp");
    const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: a.threads});
    const model = await llama.loadModel({modelPath: a.gguf, gpuLayers: 0});

    // 1. Tokenization.
    if (a.texts) {
      const texts = a.texts.split(",").flatMap(readTexts);
      const files = texts.map((t, i) => {
        const f = path.join(tmp, `text${i}.txt`);
        fs.writeFileSync(f, t);
        return f;
      });
      const ours = await pool(files, a.threads, async (f) => {
        const {stdout} = await run(a.moeforge, ["-q", "tokenize", a.model, "--file", f, "--json"], {maxBuffer: 1 << 26});
        return JSON.parse(stdout).ids;
      });
      let same = 0;
      texts.forEach((t, i) => {
        const theirs = Array.from(model.tokenize(t, true));
        if (JSON.stringify(theirs) === JSON.stringify(ours[i])) {
          same++;
        } else {
          const show = JSON.stringify(t).slice(0, 60);
          failures.push(`tokenization of text ${i} ${show}: moeforge [${ours[i].slice(0, 12)}] llama.cpp [${theirs.slice(0, 12)}]`);
        }
      });
      console.log(`${same === texts.length ? "ok" : "FAIL"}: ${a.label}: tokenization identical on ${same}/${texts.length} texts`);
    }

    // 2./3. Next-token log-probabilities and rolling perplexity.
    if (a.pplText) {
      const text = fs.readFileSync(a.pplText, "utf8").slice(0, a.maxChars);
      const textFile = path.join(tmp, "ppl.txt");
      fs.writeFileSync(textFile, text);
      const recordFile = path.join(tmp, "logprobs.json");
      const {stdout} = await run(a.moeforge, ["-q", "--threads", String(a.threads), "perplexity", a.model, "--text",
        textFile, "--dtype", a.dtype, "--context", String(a.context), "--stride", String(a.stride), "--json",
        "--token-logprobs", recordFile, "--token-logprobs-top", String(a.top)], {maxBuffer: 1 << 26});
      const ppl = JSON.parse(stdout);
      const rec = JSON.parse(fs.readFileSync(recordFile, "utf8"));
      const ctxSize = Math.max(256, a.context);
      const context = await model.createContext({contextSize: ctxSize, batchSize: ctxSize, sequences: 1,
        flashAttention: false, threads: a.threads, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32"});
      const seq = context.getSequence();
      let k = 0, maxTarget = 0, maxTop = 0, nll = 0, worst = -1, top1Same = 0;
      const diffs = [];  // per position: the largest |Δ| over the target and moeforge's top-k
      for (const w of rec.windows) {
        await seq.clearHistory();
        const input = [];
        for (let t = w.begin; t < w.end; t++) {
          const tok = rec.ids[t];
          // The prediction for target t comes from position t - 1.
          const kk = k + (t + 1 - w.first);
          input.push(t >= w.first - 1 && t < w.end - 1
            ? [tok, {generateNext: {totalLogitWeight: true,
                logits: {filter: {tokens: [rec.ids[t + 1], ...rec.top_ids[kk]], includeTop: 1}}}}]
            : tok);
        }
        const outs = await seq.controlledEvaluate(input);
        for (let t = w.first; t < w.end; t++, k++) {
          const res = outs[t - 1 - w.begin];
          if (!res?.next?.logits || res.next.totalLogitWeight === undefined)
            throw new Error(`no logits from llama.cpp at position ${t - 1}`);
          const cand = rec.top_ids[k];
          const {argmax, lp} = logProbs(res.next, [rec.ids[t], ...cand]);
          const dTarget = Math.abs(lp[0] - rec.logprob[k]);
          if (!(dTarget <= maxTarget)) { maxTarget = Number.isNaN(dTarget) ? Infinity : dTarget; worst = t; }
          let dPos = Number.isNaN(dTarget) ? Infinity : dTarget;
          for (let j = 0; j < cand.length; j++) {
            const d = Math.abs(lp[j + 1] - rec.top_logprobs[k][j]);
            maxTop = Number.isNaN(d) ? Infinity : Math.max(maxTop, d);
            dPos = Number.isNaN(d) ? Infinity : Math.max(dPos, d);
          }
          diffs.push(dPos);
          if (argmax === cand[0]) top1Same++;
          nll -= lp[0];
        }
      }
      if (k !== rec.logprob.length) throw new Error(`scored ${k} positions, moeforge scored ${rec.logprob.length}`);
      diffs.sort((x, y) => x - y);
      const q = diffs[Math.min(diffs.length - 1, Math.ceil(a.quantile * diffs.length) - 1)];
      const mean = diffs.reduce((s, x) => s + x, 0) / diffs.length;
      const max = diffs[diffs.length - 1];
      const okLp = q <= a.tol && max <= (a.quantile < 1 ? 5 * a.tol : a.tol);
      const qName = a.quantile < 1 ? `p${Math.round(a.quantile * 100)} ${q.toExponential(2)}, ` : "";
      console.log(`${okLp ? "ok" : "FAIL"}: ${a.label}: next-token log-probs (${a.dtype} moeforge) over ${k} ` +
        `positions: |Δ| ${qName}max ${max.toExponential(2)} (targets ${maxTarget.toExponential(2)}, moeforge's ` +
        `top-${a.top} ${maxTop.toExponential(2)}), mean ${mean.toExponential(2)}; tol ${a.tol}; same argmax at ` +
        `${top1Same}/${k}`);
      if (!okLp) failures.push(`log-prob difference ${qName}max ${max} > tol ${a.tol} (worst target at token ${worst})`);
      const pplLlama = Math.exp(nll / k), pplOurs = ppl.perplexity;
      const rel = Math.abs(pplLlama - pplOurs) / pplOurs;
      const okPpl = rel <= a.pplTol;
      console.log(`${okPpl ? "ok" : "FAIL"}: ${a.label}: rolling perplexity (${rec.windows.length} windows of ` +
        `${a.context}, stride ${a.stride}) llama.cpp ${pplLlama.toFixed(4)} moeforge ${pplOurs.toFixed(4)} ` +
        `(${(rel * 100).toFixed(4)}%, tol ${(a.pplTol * 100).toFixed(2)}%)`);
      if (!okPpl) failures.push(`perplexity differs by ${(rel * 100).toFixed(4)}%`);
      await context.dispose();
    }
    await model.dispose();
    await llama.dispose();
  } finally {
    fs.rmSync(tmp, {recursive: true, force: true});
  }
  for (const f of failures) console.log(`FAIL: ${f}`);
  process.exit(failures.length ? 1 : 0);
}

main().catch((e) => {
  const stderr = String(e?.stderr ?? "").trim();
  console.log(`FAIL: ${String(e?.message ?? e).split("\n")[0]}${stderr ? ` (${stderr.split("\n")[0]})` : ""}`);
  process.exit(1);
});
