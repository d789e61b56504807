/** The shortest passphrase the engine accepts when one is set (`vault::MIN_PASSPHRASE_CHARS`). */
export const MIN_PASSPHRASE_CHARS = 8;

/** What is wrong with a new passphrase typed twice, or null when it may be set. */
export function newPassphraseProblem(passphrase: string, again: string): string | null {
  if ([...passphrase].length < MIN_PASSPHRASE_CHARS) return `A passphrase needs at least ${MIN_PASSPHRASE_CHARS} characters.`;
  if (passphrase !== again) return "The two passphrases differ.";
  return null;
}
