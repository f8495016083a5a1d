/**
 * Splits a text stream into lines (the @std/streams TextLineStream is on JSR, which these
 * machines cannot reach).
 *
 * @module
 */

/** A TransformStream from text chunks to lines without their line breaks. */
export class TextLineStream extends TransformStream<string, string> {
  constructor() {
    let buffer = "";
    super({
      transform(chunk, controller) {
        buffer += chunk;
        const parts = buffer.split(/\r?\n/);
        buffer = parts.pop() ?? "";
        for (const line of parts) controller.enqueue(line);
      },
      flush(controller) {
        if (buffer !== "") controller.enqueue(buffer);
      },
    });
  }
}
