import { computed, ref, watchEffect } from 'vue'

export type ThemeChoice = 'system' | 'light' | 'dark'
const THEME_KEY = 'airi.theme'

const stored = localStorage.getItem(THEME_KEY)
const choice = ref<ThemeChoice>(stored === 'light' || stored === 'dark' ? stored : 'system')
const systemDark = window.matchMedia('(prefers-color-scheme: dark)')
const prefersDark = ref(systemDark.matches)
systemDark.addEventListener('change', event => (prefersDark.value = event.matches))

const effective = computed(() => choice.value === 'system' ? (prefersDark.value ? 'dark' : 'light') : choice.value)
// `data-theme` on <html> picks the variables in style.css.
watchEffect(() => (document.documentElement.dataset.theme = effective.value))

/** Light or dark, following the system unless the person chose one (kept on this device). */
export function useTheme() {
  return {
    choice,
    effective,
    setTheme(next: ThemeChoice) {
      choice.value = next
      if (next === 'system')
        localStorage.removeItem(THEME_KEY)
      else localStorage.setItem(THEME_KEY, next)
    },
  }
}
