#!/usr/bin/env node
// Runs the TypeScript CLI directly: the checkout and the container image run the same sources.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
