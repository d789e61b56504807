/** Pictures handed to Rust for QR reading: a pasted screenshot or a camera frame. */

/** Base64 of raw bytes (chunked, so large pictures do not overflow the argument list). */
export function bytesToBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** The first picture among pasted items, if any. */
export function pastedPicture(items: DataTransferItemList | null | undefined): File | null {
  for (const item of items ?? []) {
    if (item.kind === "file" && item.type.startsWith("image/")) return item.getAsFile();
  }
  return null;
}

/** The base64 PNG in a canvas `data:` URL. */
export function dataUrlBase64(url: string): string {
  const comma = url.indexOf(",");
  return comma < 0 ? "" : url.slice(comma + 1);
}
