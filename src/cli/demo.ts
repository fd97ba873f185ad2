export async function runDemo(_opts: { keep: boolean; out(s: string): void; signal: AbortSignal }): Promise<number> {
  return 0;
}
