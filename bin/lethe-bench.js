#!/usr/bin/env node
// Runs the benchmark from its TypeScript sources, as bin/lethe.js runs the CLI. See docs/benchmarks.md.
import { register } from 'tsx/esm/api';

register();
await import('../bench/main.ts');
