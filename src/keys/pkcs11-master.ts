import { createRequire } from 'node:module';
import { readFile } from 'node:fs/promises';
import { P256Identity, decodeP256Recipient, decryptBytes, encodeP256Recipient, type FileKeyUnwrapper } from '../crypto/index.ts';
import { ErrorCode, LetheError, wrapForeign } from '../errors/index.ts';
import type { MasterKeyProvider } from './master.ts';

// pkcs11js is a native addon (CommonJS); loaded on first use so that hosts without the
// PKCS#11 provider never load it.
type Pkcs11Module = typeof import('pkcs11js');
type Pkcs11 = InstanceType<Pkcs11Module['PKCS11']>;
type Handle = Buffer;

/** Modules loaded and initialised in this process (C_Initialize is once per process). */
const LOADED = new Map<string, Pkcs11>();

/** DER of the P-256 curve's OID (1.2.840.10045.3.1.7), for CKA_EC_PARAMS. */
const P256_PARAMS = Buffer.from('06082a8648ce3d030107', 'hex');

export interface Pkcs11MasterOptions {
  /** The PKCS#11 module's path. */
  readonly module: string;
  /** The token's label. */
  readonly token: string;
  /** The user PIN, from a 0600 file or the config's `${ENV}` value; never logged. */
  readonly pin: { readonly file: string } | { readonly value: string };
  /** Objects are `<label>-epoch-<N>`. */
  readonly label: string;
}

/**
 * The PKCS#11 provider: one EC P-256 key pair per epoch in the token, labelled
 * `<label>-epoch-<N>`, the private half sensitive and non-extractable with CKA_DERIVE only.
 * Its recipient is `lethe-p256:<point>` (crypto/p256-master.ts): wrapping needs only that
 * public key (the backup never talks to the token), unwrapping asks the token for the ECDH
 * secret (CKM_ECDH1_DERIVE, a session object read once and destroyed). Destroying an epoch
 * is C_DestroyObject of both halves. The PIN is read from its file or the config, passed to
 * C_Login, and never written anywhere.
 */
export class Pkcs11MasterKeys implements MasterKeyProvider {
  readonly kind = 'pkcs11' as const;
  #lib: Pkcs11Module | undefined;
  #p11: Pkcs11 | undefined;
  #session: Handle | undefined;

  constructor(private readonly options: Pkcs11MasterOptions) {}

  reference(epoch: number): string {
    return `pkcs11:token=${this.options.token};object=${this.#label(epoch)}`;
  }

  #label(epoch: number): string {
    if (!Number.isSafeInteger(epoch) || epoch < 1) throw new LetheError(ErrorCode.INTERNAL, `invalid master epoch ${epoch}`);
    return `${this.options.label}-epoch-${epoch}`;
  }

  async #open(): Promise<{ lib: Pkcs11Module; p11: Pkcs11; session: Handle }> {
    if (this.#lib !== undefined && this.#p11 !== undefined && this.#session !== undefined) return { lib: this.#lib, p11: this.#p11, session: this.#session };
    const pin = 'file' in this.options.pin ? (await readPin(this.options.pin.file)) : this.options.pin.value;
    let lib: Pkcs11Module;
    try {
      lib = createRequire(import.meta.url)('pkcs11js') as Pkcs11Module;
    } catch (err) {
      // An optional dependency: npm ci skips it where it cannot compile it.
      throw wrapForeign(
        ErrorCode.MASTER_KEY,
        'loading the PKCS#11 binding (npm package pkcs11js, built at install; without a C++ compiler, make and python3 npm ci skips it: install them, e.g. `apt-get install g++ make python3`, then run `npm rebuild pkcs11js`)',
        err,
      );
    }
    // Cryptoki is initialised once per process and module; every provider opens its own session.
    let p11 = LOADED.get(this.options.module);
    if (p11 === undefined) {
      p11 = new lib.PKCS11();
      try {
        p11.load(this.options.module);
        p11.C_Initialize();
      } catch (err) {
        throw wrapForeign(ErrorCode.MASTER_KEY, `loading the PKCS#11 module ${this.options.module}`, err);
      }
      LOADED.set(this.options.module, p11);
    }
    try {
      const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trim() === this.options.token);
      if (slot === undefined) {
        throw new LetheError(ErrorCode.MASTER_KEY, `no PKCS#11 token labelled ${JSON.stringify(this.options.token)} in ${this.options.module}: check \`master.token\``);
      }
      const session = p11.C_OpenSession(slot, lib.CKF_RW_SESSION | lib.CKF_SERIAL_SESSION);
      try {
        p11.C_Login(session, lib.CKU_USER, pin);
      } catch (err) {
        // The login is the token's, shared by every session of this process.
        if ((err as { code?: unknown }).code !== lib.CKR_USER_ALREADY_LOGGED_IN) {
          p11.C_CloseSession(session);
        // The module's message names the return code (CKR_PIN_INCORRECT), never the PIN.
          throw new LetheError(ErrorCode.MASTER_KEY, `logging in to PKCS#11 token ${JSON.stringify(this.options.token)} failed (${(err as Error).message.split(':')[0] ?? 'error'}): check the PIN in \`master.pin\``);
        }
      }
      this.#lib = lib;
      this.#p11 = p11;
      this.#session = session;
      return { lib, p11, session };
    } catch (err) {
      throw err instanceof LetheError ? err : wrapForeign(ErrorCode.MASTER_KEY, `opening PKCS#11 token ${this.options.token}`, err);
    }
  }

  /** Closes this provider's session (the token logs out with its last session). */
  close(): void {
    if (this.#p11 === undefined) return;
    try {
      if (this.#session !== undefined) this.#p11.C_CloseSession(this.#session);
    } catch {
      // closing: nothing to report
    }
    this.#p11 = undefined;
    this.#session = undefined;
  }

  async #find(epoch: number, cls: 'private' | 'public'): Promise<Handle | null> {
    const { lib, p11, session } = await this.#open();
    p11.C_FindObjectsInit(session, [
      { type: lib.CKA_LABEL, value: this.#label(epoch) },
      { type: lib.CKA_CLASS, value: cls === 'private' ? lib.CKO_PRIVATE_KEY : lib.CKO_PUBLIC_KEY },
    ]);
    try {
      const found = p11.C_FindObjects(session, 2);
      if (found.length > 1) throw new LetheError(ErrorCode.MASTER_KEY, `PKCS#11 token ${this.options.token} holds several ${cls} keys labelled ${this.#label(epoch)}: remove the stray one`);
      return found[0] ?? null;
    } finally {
      p11.C_FindObjectsFinal(session);
    }
  }

  async #recipient(epoch: number): Promise<string | null> {
    const handle = await this.#find(epoch, 'public');
    if (handle === null) return null;
    const { lib, p11, session } = await this.#open();
    const [attr] = p11.C_GetAttributeValue(session, handle, [{ type: lib.CKA_EC_POINT }]);
    const der = attr?.value;
    // CKA_EC_POINT is a DER OCTET STRING (04 41) around the 65-byte uncompressed point.
    if (!(der instanceof Buffer) || der.length !== 67 || der[0] !== 0x04 || der[1] !== 0x41) {
      throw new LetheError(ErrorCode.MASTER_KEY, `the public key ${this.#label(epoch)} in token ${this.options.token} is not an uncompressed P-256 point`);
    }
    return encodeP256Recipient(der.subarray(2));
  }

  async create(epoch: number): Promise<string> {
    const existing = await this.#recipient(epoch);
    if (existing !== null && (await this.#find(epoch, 'private')) !== null) return existing;
    const { lib, p11, session } = await this.#open();
    const label = this.#label(epoch);
    const id = Buffer.from(label, 'utf8');
    try {
      p11.C_GenerateKeyPair(
        session,
        { mechanism: lib.CKM_EC_KEY_PAIR_GEN },
        [
          { type: lib.CKA_TOKEN, value: true },
          { type: lib.CKA_EC_PARAMS, value: P256_PARAMS },
          { type: lib.CKA_LABEL, value: label },
          { type: lib.CKA_ID, value: id },
        ],
        [
          { type: lib.CKA_TOKEN, value: true },
          { type: lib.CKA_PRIVATE, value: true },
          { type: lib.CKA_SENSITIVE, value: true },
          { type: lib.CKA_EXTRACTABLE, value: false },
          { type: lib.CKA_DERIVE, value: true },
          { type: lib.CKA_SIGN, value: false },
          { type: lib.CKA_DECRYPT, value: false },
          { type: lib.CKA_LABEL, value: label },
          { type: lib.CKA_ID, value: id },
        ],
      );
    } catch (err) {
      throw wrapForeign(ErrorCode.MASTER_KEY, `creating master key ${label} in PKCS#11 token ${this.options.token}`, err);
    }
    const recipient = await this.#recipient(epoch);
    if (recipient === null) throw new LetheError(ErrorCode.MASTER_KEY, `the token did not keep the new key ${label}`);
    return recipient;
  }

  async exists(epoch: number): Promise<boolean> {
    return (await this.#find(epoch, 'private')) !== null;
  }

  /** The age identity of epoch `epoch`: its stanzas are opened by the token's ECDH. */
  async #identity(epoch: number): Promise<FileKeyUnwrapper | null> {
    const privateKey = await this.#find(epoch, 'private');
    const recipient = await this.#recipient(epoch);
    if (privateKey === null || recipient === null) return null;
    const { lib, p11, session } = await this.#open();
    return new P256Identity(decodeP256Recipient(recipient), (share) => {
      const ecdhParams: import('pkcs11js').ECDH1 = { type: lib.CK_PARAMS_EC_DH, kdf: lib.CKD_NULL, publicData: Buffer.from(share) };
      const secret = p11.C_DeriveKey(
        session,
        { mechanism: lib.CKM_ECDH1_DERIVE, parameter: ecdhParams },
        privateKey,
        [
          { type: lib.CKA_CLASS, value: lib.CKO_SECRET_KEY },
          { type: lib.CKA_KEY_TYPE, value: lib.CKK_GENERIC_SECRET },
          { type: lib.CKA_VALUE_LEN, value: 32 },
          { type: lib.CKA_TOKEN, value: false },
          { type: lib.CKA_SENSITIVE, value: false },
          { type: lib.CKA_EXTRACTABLE, value: true },
        ],
      );
      try {
        const [attr] = p11.C_GetAttributeValue(session, secret, [{ type: lib.CKA_VALUE }]);
        const z = attr?.value;
        if (!(z instanceof Buffer) || z.length !== 32) throw new LetheError(ErrorCode.MASTER_KEY, 'the token derived no 32-byte secret');
        return z;
      } finally {
        p11.C_DestroyObject(session, secret);
      }
    });
  }

  async unwrap(epoch: number | null, wrapped: Uint8Array): Promise<Uint8Array> {
    const identity = await this.#identity(epoch ?? 1);
    if (identity === null) {
      throw new LetheError(ErrorCode.MASTER_KEY, `the master key of epoch ${String(epoch)} (${this.#label(epoch ?? 1)}) is not in PKCS#11 token ${this.options.token}: it was destroyed`);
    }
    return decryptBytes(wrapped, [identity]);
  }

  async destroy(epoch: number): Promise<null> {
    const { p11, session } = await this.#open();
    for (const cls of ['private', 'public'] as const) {
      const handle = await this.#find(epoch, cls);
      if (handle === null) continue;
      try {
        p11.C_DestroyObject(session, handle);
      } catch (err) {
        throw wrapForeign(ErrorCode.MASTER_KEY, `destroying ${this.#label(epoch)} in PKCS#11 token ${this.options.token}`, err);
      }
    }
    return null;
  }

  async identities(): Promise<FileKeyUnwrapper[]> {
    const { lib, p11, session } = await this.#open();
    p11.C_FindObjectsInit(session, [{ type: lib.CKA_CLASS, value: lib.CKO_PRIVATE_KEY }]);
    const labels: number[] = [];
    try {
      for (const handle of p11.C_FindObjects(session, 1000)) {
        const [attr] = p11.C_GetAttributeValue(session, handle, [{ type: lib.CKA_LABEL }]);
        const label = attr?.value instanceof Buffer ? attr.value.toString('utf8') : '';
        const m = new RegExp(`^${this.options.label.replace(/[.]/g, '\\.')}-epoch-(\\d+)$`).exec(label);
        if (m?.[1] !== undefined) labels.push(Number(m[1]));
      }
    } finally {
      p11.C_FindObjectsFinal(session);
    }
    const out: FileKeyUnwrapper[] = [];
    for (const epoch of labels.sort((a, b) => b - a)) {
      const identity = await this.#identity(epoch);
      if (identity !== null) out.push(identity);
    }
    return out;
  }
}

async function readPin(file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw wrapForeign(ErrorCode.MASTER_KEY, `reading the PKCS#11 PIN file ${file}`, err);
  }
  const pin = text.replace(/\r?\n$/, '');
  if (pin === '') throw new LetheError(ErrorCode.MASTER_KEY, `the PKCS#11 PIN file ${file} is empty`);
  return pin;
}
