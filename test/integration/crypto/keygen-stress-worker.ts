// Generates and uses many keys with heap churn in between, in a process of its own, so that
// a hang in node:crypto (see src/crypto/keys.ts) shows as a timeout instead of a stuck suite.
import { randomBytes } from 'node:crypto';
import {
  FastX25519Identity,
  FastX25519Recipient,
  generateKeyPair,
  generateSigningKey,
  recipientOf,
} from '../../../src/crypto/index.ts';

const rounds = Number(process.argv[2] ?? 3000);
const fileKey = randomBytes(16);
const recipient = new FastX25519Recipient(generateKeyPair().recipient);
const junk: unknown[] = [];
for (let i = 0; i < rounds; i++) {
  const pair = generateKeyPair();
  if (recipientOf(pair.identity) !== pair.recipient) throw new Error('recipient mismatch');
  const stanzas = new FastX25519Recipient(pair.recipient).wrapFileKey(fileKey);
  if (new FastX25519Identity(pair.identity).unwrapFileKey(stanzas) === null) {
    throw new Error('unwrap failed');
  }
  for (let j = 0; j < 5; j++) recipient.wrapFileKey(fileKey);
  if (i % 10 === 0) generateSigningKey();
  if (i % 50 === 0) junk.push(new Array(1000).fill(i), Buffer.alloc(i % 4096));
  if (junk.length > 40) junk.length = 0;
}
process.stdout.write('ok\n');
