export default {
  title: 'Account',
  profile: {
    title: 'Profile',
    email: 'E-mail',
    name: 'Name',
    noName: 'Not given',
  },
  devices: {
    title: 'Sign-in and devices',
    text: 'Sign in with this e-mail on any device: your characters, chats and Flux are the same everywhere and update live.',
    signOut: 'To sign out of this device, open the menu at the top right. Forgot your password? The sign-in page can send you a link to set a new one.',
  },
  apiKeys: {
    title: 'API keys',
    text: 'Let other apps, such as SillyTavern or your own scripts, use AI with your Flux — each with a key of its own that you can limit and revoke.',
    open: 'Manage API keys',
  },
  export: {
    title: 'Your data',
    text: 'One JSON file with everything we keep about you: profile, characters, chats and their messages, provider settings (keys left out), Flux ledger, orders and usage.',
    download: 'Download my data',
    preparing: 'Preparing your data…',
    saved: 'Saved {file} to your downloads.',
    tooOften: 'You have downloaded your data several times this hour; try again in {minutes} minute. | You have downloaded your data several times this hour; try again in {minutes} minutes.',
    cutOff: 'The download was cut off. Try again.',
  },
  delete: {
    title: 'Delete the account',
    text: 'Deletes your characters, chats and Flux. The record of payments is kept, as the law requires.',
    start: 'Delete my account…',
    confirm: 'Yes, e-mail me the confirmation link',
    keep: 'Keep my account',
    sent: 'Check your inbox: the account is deleted when you open the link we sent to {email}.',
    signInAgain: 'To delete your account, sign in again on the sign-in page first (your browser session there has ended).',
  },
}
