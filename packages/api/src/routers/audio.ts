import { createRouter, protectedProcedure } from '../trpc.ts'

export const audioRouter = createRouter({
  /**
   * A single-use ticket (60 s) for the streaming speech socket
   * `/api/v1/audio/speech/ws?ticket=…`, bound to the caller's session; 30 per minute.
   */
  createSpeechTicket: protectedProcedure.mutation(({ ctx }) => ctx.services.streamingSpeech.createTicket(ctx.auth)),
  /**
   * A single-use ticket (60 s) for the streaming transcription socket
   * `/api/v1/audio/transcriptions/ws?ticket=…`, bound to the caller's session; 30 per minute.
   */
  createTranscriptionTicket: protectedProcedure.mutation(({ ctx }) => ctx.services.streamingTranscription.createTicket(ctx.auth)),
})
