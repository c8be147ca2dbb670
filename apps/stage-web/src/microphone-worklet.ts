// Runs in the AudioWorkletGlobalScope (microphone.ts loads it): it only batches the
// microphone's 128-sample render quanta, so the page gets a message every ~40 ms.

declare class AudioWorkletProcessor {
  readonly port: MessagePort
}
declare function registerProcessor(name: string, processor: new () => AudioWorkletProcessor): void

const BATCH_SAMPLES = 2048

class MicrophoneCapture extends AudioWorkletProcessor {
  private batch = new Float32Array(BATCH_SAMPLES)
  private filled = 0

  process(inputs: Float32Array[][]): boolean {
    const channel = inputs[0]?.[0]
    let read = 0
    while (channel && read < channel.length) {
      const take = Math.min(channel.length - read, BATCH_SAMPLES - this.filled)
      this.batch.set(channel.subarray(read, read + take), this.filled)
      this.filled += take
      read += take
      if (this.filled === BATCH_SAMPLES) {
        this.port.postMessage(this.batch, [this.batch.buffer])
        this.batch = new Float32Array(BATCH_SAMPLES)
        this.filled = 0
      }
    }
    // Kept alive while the page holds the node, with or without input.
    return true
  }
}

registerProcessor('airi-microphone', MicrophoneCapture)

export {}
