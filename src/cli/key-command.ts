// gorde key create|info|passwd|paper|import: manage the key file of client-side
// encryption. Passphrases come from the environment, never from arguments (which
// other users can see in the process list).
import fsp from "node:fs/promises";
import { GordeError } from "../errors.ts";
import { changePassphrase, createKeyFile, importKeyFile, keyInfo, paperKey, parsePaperKey } from "../client/key-file.ts";
import type { CommandContext } from "./command.ts";

const USAGE = "usage: gorde key create|info|passwd|paper|import ...";
const PASSPHRASE_ENV = "GORDE_KEY_PASSPHRASE";
const NEW_PASSPHRASE_ENV = "GORDE_NEW_KEY_PASSPHRASE";
/** A paper key is a few lines; a larger file is not one. */
const MAX_PAPER_SIZE = 1024 * 1024;

function operands(ctx: CommandContext, count: number, usage: string): string[] {
  const rest = ctx.positionals.slice(1);
  if (rest.length !== count) throw new GordeError("usage", `usage: gorde key ${usage}`);
  return rest;
}

function passphrase(name: string, purpose: string): string {
  const v = process.env[name];
  if (v === undefined) throw new GordeError("usage", `set ${name} to the ${purpose}.`);
  return v;
}

async function readFileBounded(file: string, what: string): Promise<Buffer> {
  let content: Buffer;
  try {
    const st = await fsp.stat(file);
    if (st.size > MAX_PAPER_SIZE) throw new GordeError("invalid", `${what} ${file} is larger than ${MAX_PAPER_SIZE} bytes.`);
    content = await fsp.readFile(file);
  } catch (err) {
    if (err instanceof GordeError) throw err;
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new GordeError("not-found", `${what} ${file} does not exist.`, { cause: err });
    throw new GordeError("io", `${what} ${file} cannot be read: ${(err as Error).message}.`, { cause: err });
  }
  return content;
}

export const keyCommand = {
  options: { json: { type: "boolean" } } as const,
  async run(ctx: CommandContext): Promise<number | void> {
    const json = ctx.values.json === true;
    const print = (human: string, data: Record<string, string>): void => {
      ctx.out(json ? JSON.stringify(data, null, 2) + "\n" : human);
    };
    switch (ctx.positionals[0]) {
      case "create": {
        const [file] = operands(ctx, 1, "create <file>");
        const { fingerprint } = await createKeyFile(file!, passphrase(PASSPHRASE_ENV, "passphrase of the new key file"));
        print(`created key file ${file}\nfingerprint: ${fingerprint}\n`, { file: file!, fingerprint });
        return;
      }
      case "info": {
        const [file] = operands(ctx, 1, "info <file>");
        const info = await keyInfo(file!);
        print(`fingerprint: ${info.fingerprint}\ncreated: ${info.created}\nkdf: ${info.kdf}\n`, { file: file!, ...info });
        return;
      }
      case "passwd": {
        const [file] = operands(ctx, 1, "passwd <file>");
        const oldPassphrase = passphrase(PASSPHRASE_ENV, `current passphrase of ${file}`);
        const newPassphrase = passphrase(NEW_PASSPHRASE_ENV, `new passphrase of ${file}`);
        await changePassphrase(file!, oldPassphrase, newPassphrase);
        print(`changed the passphrase of key file ${file}\n`, { file: file! });
        return;
      }
      case "paper": {
        const [file] = operands(ctx, 1, "paper <file>");
        await keyInfo(file!); // a missing or malformed file gets its own message
        const text = paperKey(await readFileBounded(file!, "key file"));
        if (json) print("", { file: file!, paperKey: text });
        else ctx.out(text);
        return;
      }
      case "import": {
        const [paperFile, file] = operands(ctx, 2, "import <paper-text-file> <file>");
        const content = parsePaperKey((await readFileBounded(paperFile!, "paper key file")).toString("utf8"));
        const { fingerprint } = await importKeyFile(file!, content);
        print(`created key file ${file}\nfingerprint: ${fingerprint}\n`, { file: file!, fingerprint });
        return;
      }
      default:
        throw new GordeError("usage", USAGE);
    }
  },
};
