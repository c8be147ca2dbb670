/** A mistake in the command line (exit 2): its message is all the operator needs. */
export class UsageError extends Error {}

/** The command failed and has said why on stderr (exit 1). */
export class CommandFailed extends Error {
  constructor(readonly exitCode = 1) {
    super('the command failed')
  }
}
